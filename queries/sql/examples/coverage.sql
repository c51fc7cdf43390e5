-- What each provider holds: items, time span and extent per collection (a federation-wide inventory).
SELECT federated_collection, items, datetime_min, datetime_max,
       [round(xmin, 3), round(ymin, 3), round(xmax, 3), round(ymax, 3)] AS bbox
FROM collections
ORDER BY federated_collection;
