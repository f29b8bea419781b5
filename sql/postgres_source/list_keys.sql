COPY (SELECT {key}, {version}, {hash} FROM {table} ORDER BY {order}) TO STDOUT (FORMAT binary)
