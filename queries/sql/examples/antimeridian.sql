-- Items on either side of the antimeridian (the box 170°E..170°W crosses it), per provider and collection.
SELECT provider, collection, count(*) AS items, min(datetime) AS first, max(datetime) AS last
FROM search_bbox(170, -90, -170, 90)
GROUP BY ALL
ORDER BY items DESC;
