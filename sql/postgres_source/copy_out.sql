COPY (SELECT {columns} FROM {table}{filter}) TO STDOUT (FORMAT binary)
