COPY (SELECT {columns} FROM {table} ORDER BY {order}) TO STDOUT (FORMAT binary)
