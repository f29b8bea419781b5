CREATE OR REPLACE STAGE {stage}
    URL = {url}{storage_integration}
    FILE_FORMAT = (TYPE = PARQUET)
