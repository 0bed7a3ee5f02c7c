-- Run once by the postgres container on first start (empty data volume):
-- the global database and one database per regional identity store.
CREATE DATABASE idmesh;
CREATE DATABASE idmesh_store_wnam;
CREATE DATABASE idmesh_store_enam;
CREATE DATABASE idmesh_store_sam;
CREATE DATABASE idmesh_store_weur;
CREATE DATABASE idmesh_store_eeur;
CREATE DATABASE idmesh_store_apac;
CREATE DATABASE idmesh_store_oc;
CREATE DATABASE idmesh_store_afr;
