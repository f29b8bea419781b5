COPY (SELECT {key}, {version}, {hash} FROM {table} WHERE {live} ORDER BY {order}) TO STDOUT (FORMAT binary)
