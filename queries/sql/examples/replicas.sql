-- Products held by more than one provider (the same Sentinel/Landsat product under each provider's own name),
-- with each replica's provider, collection, id and self href.
SELECT r.*
FROM (SELECT product_key FROM products WHERE replicas > 1 ORDER BY datetime DESC LIMIT 10) p
JOIN (SELECT product_key, provider, federated_collection, id, cscale_self_href(links) AS href FROM items) r
  USING (product_key)
ORDER BY product_key, provider;
