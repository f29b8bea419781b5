CREATE PUBLICATION {publication} FOR TABLE {table}
