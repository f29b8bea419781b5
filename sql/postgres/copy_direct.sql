COPY {target} ({columns}) FROM STDIN (FORMAT binary)
