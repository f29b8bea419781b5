ALTER TABLE {table} RENAME TO {new_name}
