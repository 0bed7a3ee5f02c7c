#!/bin/sh
# Run once by a postgres container on the first start of an empty data volume
# (mounted into /docker-entrypoint-initdb.d): creates every database that
# IDM_DATABASES (space-separated) names.
set -eu
for db in ${IDM_DATABASES:?}; do
	psql -v ON_ERROR_STOP=1 -Xq --username "$POSTGRES_USER" --dbname postgres -c "CREATE DATABASE \"$db\""
done
