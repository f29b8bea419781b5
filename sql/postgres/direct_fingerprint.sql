SELECT
    count(*)::bigint AS row_count,
    (((coalesce(sum(
        ('x' || left(md5(
            {key}::text
            || '|' || floor(extract(epoch FROM {version}) * 1000)::bigint::text
            || '|f'
        ), 16))::bit(64)::bigint
    ), 0) % 18446744073709551616) + 18446744073709551616) % 18446744073709551616)::numeric(20, 0)::text AS checksum
FROM {target}
