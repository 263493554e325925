CREATE TABLE movies (
  user_id   integer,
  name      varchar(40),
  director  varchar(40)
);
