ALTER PUBLICATION {publication} SET TABLE {table}
