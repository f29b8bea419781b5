CREATE OR REPLACE TRANSIENT TABLE {incoming} (
    {column_defs}
)
