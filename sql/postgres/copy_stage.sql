COPY {stage} ({columns}) FROM STDIN (FORMAT binary)
