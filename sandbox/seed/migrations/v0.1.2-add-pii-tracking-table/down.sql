DROP TABLE pii_access_tracking;
