//! CSV and JSONL exports → Parquet staging → a real PostgreSQL, through the file source.

use syncline::reconcile::report::Status;

use crate::support::files::{FilesHarness, files_config, run_binary};
use crate::support::report_stream;

/// 2024-03-01T00:00:00Z, the base of the export times below.
const T0: i64 = 1_709_251_200_000;
const HOUR: i64 = 3_600_000;

fn contact_line(i: i64) -> String {
    let tags = if i % 4 == 0 {
        "null".to_string()
    } else {
        format!("[\"t{}\", {}]", i % 3, i % 5)
    };
    format!(
        r#"{{"id": {i}, "email": "user{i}@example.com", "score": {score}, "vip": {vip}, "signed_up": "2024-01-{day:02}", "updated_at": "2024-03-01T{hour:02}:00:00.{ms:03}Z", "tags": {tags}}}"#,
        score = i as f64 / 4.0,
        vip = i % 3 == 0,
        day = i % 28 + 1,
        hour = i % 24,
        ms = i % 1000,
    )
}

/// What PostgreSQL shows for `contact_line(i)` in the columns `CONTACT_COLUMNS` select.
fn contact_row(i: i64, version: i64) -> Vec<Option<String>> {
    let tags = (i % 4 != 0).then(|| format!("[\"t{}\",{}]", i % 3, i % 5));
    vec![
        Some(i.to_string()),
        Some(format!("user{i}@example.com")),
        Some((i as f64 / 4.0).to_string()),
        Some((i % 3 == 0).to_string()),
        Some(format!("2024-01-{:02}", i % 28 + 1)),
        Some((T0 + (i % 24) * HOUR + i % 1000).to_string()),
        tags,
        Some(version.to_string()),
    ]
}

const CONTACT_COLUMNS: &[&str] = &[
    "id",
    "email",
    "score",
    "vip",
    "signed_up",
    "(extract(epoch from updated_at) * 1000)::bigint",
    "tags",
    "(extract(epoch from _syncline_version) * 1000)::bigint",
];

fn jsonl(ids: impl Iterator<Item = i64>) -> String {
    ids.map(|i| contact_line(i) + "\n").collect()
}

const DEALS: &str = "deal_id;name;amount;closed;close_date\n\
                     D-1;\"Big; deal\";1000.5;true;2024-04-01\n\
                     D-2;Small deal;NULL;false;\n\
                     D-3;\"Quoted \"\"name\"\"\";12;TRUE;2024-04-03\n";

const DEALS_TABLE: &str = r#"
[source.files.deals]
glob = "deals/*.csv"
format = "csv"
key = "deal_id"
delimiter = ";"
null_values = ["", "NULL"]
[source.files.deals.schema]
deal_id = "utf8"
name = "utf8"
amount = "float64"
closed = "boolean"
close_date = "date32"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_and_jsonl_load_equal_the_files_and_a_rerun_loads_nothing() {
    let h = FilesHarness::start().await;
    // 2,500 contacts over two files and three batches; the schema is inferred.
    h.write_file("contacts/part-1.jsonl", &jsonl(1..=1500), T0 + HOUR);
    h.write_file("contacts/part-2.jsonl", &jsonl(1501..=2500), T0 + 2 * HOUR);
    h.write_file("contacts/notes.txt", "not an export", T0);
    h.write_file("deals/2024-04.csv", DEALS, T0 + 3 * HOUR);
    h.write_config(
        &["contacts", "deals"],
        &format!(
            "[source.files.contacts]\nglob = \"contacts/*.jsonl\"\nformat = \"jsonl\"\nkey = \"id\"\n{DEALS_TABLE}"
        ),
    );

    let checked: Vec<String> = syncline::pipeline::check(&h.config(), &Default::default())
        .await
        .iter()
        .map(|c| c.line())
        .collect();
    for wanted in [
        "✓ source stream contacts: readable; 2 file(s) match glob \"contacts/*.jsonl\"",
        "✓ source stream deals: readable; 1 file(s) match glob \"deals/*.csv\"",
    ] {
        assert!(checked.iter().any(|l| l == wanted), "{checked:#?}");
    }

    let first = h.run(false).await;
    assert_eq!(first.status, Status::Success, "{first:#?}");
    let contacts = report_stream(&first, "contacts");
    assert_eq!(contacts.rows_inserted, 2500, "{contacts:#?}");
    assert!(contacts.reconciliation.matched, "{contacts:#?}");
    let expected: Vec<_> = (1..=2500)
        .map(|i| contact_row(i, if i <= 1500 { T0 + HOUR } else { T0 + 2 * HOUR }))
        .collect();
    assert_eq!(h.rows("contacts", CONTACT_COLUMNS).await, expected);
    // The cursor is the newest file's last-modified time.
    assert_eq!(contacts.cursor.unwrap().to, T0 + 2 * HOUR);

    assert_eq!(report_stream(&first, "deals").rows_inserted, 3);
    assert_eq!(
        h.rows(
            "deals",
            &["deal_id", "name", "amount", "closed", "close_date"]
        )
        .await,
        vec![
            vec![
                Some("D-1".into()),
                Some("Big; deal".into()),
                Some("1000.5".into()),
                Some("true".into()),
                Some("2024-04-01".into())
            ],
            vec![
                Some("D-2".into()),
                Some("Small deal".into()),
                None,
                Some("false".into()),
                None
            ],
            vec![
                Some("D-3".into()),
                Some("Quoted \"name\"".into()),
                Some("12".into()),
                Some("true".into()),
                Some("2024-04-03".into())
            ],
        ]
    );

    let ledger = h.ledger_count().await;
    let again = h.run(false).await;
    assert_eq!(again.status, Status::Success, "{again:#?}");
    for stream in &again.streams {
        assert_eq!(stream.rows_extracted, 0, "{stream:#?}");
        assert_eq!(
            (
                stream.rows_inserted,
                stream.rows_updated,
                stream.rows_deleted
            ),
            (0, 0, 0)
        );
    }
    assert_eq!(
        h.ledger_count().await,
        ledger,
        "an idle run commits no load"
    );
    assert_eq!(h.rows("contacts", CONTACT_COLUMNS).await, expected);

    // --full-refresh reads every file again, and nothing changes.
    let full = h.run(true).await;
    assert_eq!(report_stream(&full, "contacts").rows_extracted, 2500);
    assert_eq!(report_stream(&full, "contacts").rows_updated, 0);
    assert_eq!(h.rows("contacts", CONTACT_COLUMNS).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_file_is_loaded_and_a_changed_file_is_loaded_again() {
    let h = FilesHarness::start().await;
    h.write_config(
        &["contacts"],
        "[source.files.contacts]\nglob = \"**/*.jsonl\"\nformat = \"jsonl\"\nkey = \"id\"\ndeleted_column = \"archived\"\n\
         [source.files.contacts.schema]\nid = \"int64\"\nemail = \"utf8\"\narchived = \"boolean\"\n",
    );
    h.write_file(
        "a.jsonl",
        "{\"id\": 1, \"email\": \"one@x\"}\n{\"id\": 2, \"email\": \"two@x\"}\n{\"id\": 3, \"email\": \"three@x\", \"archived\": false}\n",
        T0,
    );
    let first = h.run(false).await;
    assert_eq!(
        report_stream(&first, "contacts").rows_inserted,
        3,
        "{first:#?}"
    );
    let ledger = h.ledger_count().await;

    // A new file in a subfolder, and a.jsonl rewritten: 2 changed, 3 archived.
    h.write_file(
        "2024/b.jsonl",
        "{\"id\": 4, \"email\": \"four@x\"}\n{\"id\": 5, \"email\": \"five@x\"}\n",
        T0 + HOUR,
    );
    h.write_file(
        "a.jsonl",
        "{\"id\": 1, \"email\": \"one@x\"}\n{\"id\": 2, \"email\": \"TWO@x\"}\n{\"id\": 3, \"email\": \"three@x\", \"archived\": true}\n",
        T0 + 2 * HOUR,
    );
    let second = h.run(false).await;
    let contacts = report_stream(&second, "contacts");
    assert_eq!(contacts.status, Status::Success, "{contacts:#?}");
    assert_eq!(
        contacts.rows_extracted, 5,
        "the changed file in full, the new one"
    );
    assert_eq!(
        (
            contacts.rows_inserted,
            contacts.rows_updated,
            contacts.rows_deleted
        ),
        // Row 1 is unchanged but newer (the file's new last-modified time): an update too.
        (2, 2, 1)
    );
    assert_eq!(h.ledger_count().await, ledger + 1);
    assert_eq!(
        h.rows("contacts", &["id", "email"]).await,
        [(1, "one@x"), (2, "TWO@x"), (4, "four@x"), (5, "five@x")]
            .iter()
            .map(|(id, email)| vec![Some(id.to_string()), Some(email.to_string())])
            .collect::<Vec<_>>()
    );

    // Nothing changed since: nothing is read.
    let idle = h.run(false).await;
    assert_eq!(report_stream(&idle, "contacts").rows_extracted, 0);
    assert_eq!(h.ledger_count().await, ledger + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lines_go_to_dead_letters_with_line_numbers() {
    let h = FilesHarness::start().await;
    h.write_config(
        &["contacts", "deals"],
        "[source.files.contacts]\nglob = \"contacts.jsonl\"\nformat = \"jsonl\"\nkey = \"id\"\n\
         [source.files.contacts.schema]\nid = \"int64\"\nemail = \"utf8\"\nscore = \"float64\"\n\
         [source.files.deals]\nglob = \"deals.csv\"\nformat = \"csv\"\nkey = \"id\"\n\
         [source.files.deals.schema]\nid = \"int64\"\nname = \"utf8\"\namount = \"float64\"\n",
    );
    h.write_file(
        "contacts.jsonl",
        "{\"id\": 1, \"email\": \"a@x\", \"score\": 1.5}\n\
         {\"id\": 2, \"email\": \"b@x\", \"score\": \"high\"}\n\
         not json at all\n\
         \n\
         {\"email\": \"nokey@x\"}\n\
         {\"id\": 6, \"email\": \"f@x\", \"score\": 6}\n\
         {\"id\": 7, \"email\": \"g@x\"",
        T0,
    );
    h.write_file(
        "deals.csv",
        "id,name,amount\n1,one,10\n2,two\n3,three,abc\n4,\"multi\nline\",40\n5,five,50\n",
        T0,
    );
    let report = h.run(false).await;
    assert_eq!(report.status, Status::Success, "{report:#?}");
    assert_eq!(report.exit_code, 0);

    let contacts = report_stream(&report, "contacts");
    assert_eq!(contacts.rows_inserted, 2);
    assert_eq!(contacts.rows_dead_lettered, 4);
    let letters = h.dead_letters(contacts).await;
    let summary: Vec<(String, Option<String>, String)> = letters
        .iter()
        .map(|l| {
            (
                l.reason.split(": ").next().unwrap().to_string(),
                l.field.clone(),
                l.raw.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "contacts.jsonl:2".into(),
                Some("score".into()),
                "{\"id\": 2, \"email\": \"b@x\", \"score\": \"high\"}".into()
            ),
            ("contacts.jsonl:3".into(), None, "not json at all".into()),
            (
                "contacts.jsonl:5".into(),
                Some("id".into()),
                "{\"email\": \"nokey@x\"}".into()
            ),
            (
                "contacts.jsonl:7".into(),
                None,
                "{\"id\": 7, \"email\": \"g@x\"".into()
            ),
        ]
    );
    assert!(
        letters[0].reason.contains("\"high\" is not a number"),
        "{letters:#?}"
    );
    assert_eq!(letters[0].key, "2");
    assert!(letters[2].reason.contains("key is missing"), "{letters:#?}");
    assert_eq!(
        h.rows("contacts", &["id", "email", "score"]).await,
        vec![
            vec![Some("1".into()), Some("a@x".into()), Some("1.5".into())],
            vec![Some("6".into()), Some("f@x".into()), Some("6".into())],
        ]
    );

    let deals = report_stream(&report, "deals");
    assert_eq!(deals.rows_inserted, 3);
    let letters = h.dead_letters(deals).await;
    assert_eq!(letters.len(), 2, "{letters:#?}");
    assert!(
        letters[0]
            .reason
            .starts_with("deals.csv:3: expected 3 fields, found 2"),
        "{letters:#?}"
    );
    assert_eq!(letters[0].raw, "2,two");
    assert!(
        letters[1].reason.starts_with("deals.csv:4: amount:"),
        "{letters:#?}"
    );
    assert_eq!(letters[1].field.as_deref(), Some("amount"));
    assert_eq!(
        h.rows("deals", &["id", "name", "amount"]).await,
        vec![
            vec![Some("1".into()), Some("one".into()), Some("10".into())],
            vec![
                Some("4".into()),
                Some("multi\nline".into()),
                Some("40".into())
            ],
            vec![Some("5".into()), Some("five".into()), Some("50".into())],
        ]
    );
}

/// A record longer than `max_record_bytes` is a dead letter, never read whole: a JSONL line
/// without its newline is skipped to the next newline and the lines after it load; a CSV quote
/// that never closes makes the rest of the file one broken record, dead-lettered, and nothing of
/// it is loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_longer_than_the_cap_are_dead_letters_and_the_rest_loads() {
    let h = FilesHarness::start().await;
    h.write_config(
        &["contacts", "deals"],
        "[source.files.contacts]\nglob = \"contacts.jsonl\"\nformat = \"jsonl\"\nkey = \"id\"\n\
         max_record_bytes = 1024\n\
         [source.files.contacts.schema]\nid = \"int64\"\nemail = \"utf8\"\n\
         [source.files.deals]\nglob = \"deals.csv\"\nformat = \"csv\"\nkey = \"id\"\n\
         max_record_bytes = 1024\n\
         [source.files.deals.schema]\nid = \"int64\"\nname = \"utf8\"\namount = \"float64\"\n",
    );
    let huge = "x".repeat(64 * 1024);
    h.write_file(
        "contacts.jsonl",
        &format!(
            "{{\"id\": 1, \"email\": \"a@x\"}}\n\
             {{\"id\": 2, \"email\": \"{huge}\"}}\n\
             {{\"id\": 3, \"email\": \"c@x\"}}\n"
        ),
        T0,
    );
    // Enough after the open quote that the broken record is far longer than the cap.
    let rest: String = (5..2000).map(|i| format!("{i},name {i},{i}\n")).collect();
    h.write_file(
        "deals.csv",
        &format!("id,name,amount\n1,one,10\n2,two,20\n3,\"unclosed,30\n{rest}"),
        T0,
    );
    let report = h.run(false).await;
    assert_eq!(report.status, Status::Success, "{report:#?}");

    let contacts = report_stream(&report, "contacts");
    assert_eq!(
        (contacts.rows_inserted, contacts.rows_dead_lettered),
        (2, 1),
        "{contacts:#?}"
    );
    let letters = h.dead_letters(contacts).await;
    assert_eq!(
        letters[0].reason,
        "contacts.jsonl:2: record longer than 1024 bytes"
    );
    assert!(letters[0].raw.len() <= 1024, "{}", letters[0].raw.len());
    assert_eq!(
        h.rows("contacts", &["id", "email"]).await,
        vec![
            vec![Some("1".into()), Some("a@x".into())],
            vec![Some("3".into()), Some("c@x".into())],
        ]
    );

    let deals = report_stream(&report, "deals");
    assert_eq!(
        (deals.rows_inserted, deals.rows_dead_lettered),
        (2, 1),
        "{deals:#?}"
    );
    let letters = h.dead_letters(deals).await;
    assert_eq!(
        letters[0].reason,
        "deals.csv:4: record longer than 1024 bytes"
    );
    assert!(letters[0].raw.len() <= 1024, "{}", letters[0].raw.len());
    assert_eq!(
        h.rows("deals", &["id", "name", "amount"]).await,
        vec![
            vec![Some("1".into()), Some("one".into()), Some("10".into())],
            vec![Some("2".into()), Some("two".into()), Some("20".into())],
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inferred_and_declared_schemas_type_the_columns() {
    let h = FilesHarness::start().await;
    h.write_file(
        "products.csv",
        "sku,price,active,launched,updated,note,empty\n\
         1,9.99,true,2024-01-01,2024-01-01 10:00:00,first,\n\
         2,10,false,2024-02-01,2024-02-01T10:00:00Z,,\n",
        T0,
    );
    h.write_config(
        &["inferred", "declared"],
        "[source.files.inferred]\nglob = \"products.csv\"\nformat = \"csv\"\nkey = \"sku\"\n\
         [source.files.declared]\nglob = \"products.csv\"\nformat = \"csv\"\nkey = \"sku\"\n\
         [source.files.declared.schema]\nsku = \"utf8\"\nprice = \"utf8\"\nactive = \"boolean\"\nupdated = \"timestamp\"\n",
    );
    let source = syncline::sources::build(&h.config()).unwrap();
    let discovered = source.discover("inferred").await.unwrap();
    use arrow::datatypes::DataType;
    let fields: Vec<(&str, DataType)> = discovered
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().clone()))
        .collect();
    let timestamp = syncline::schema::timestamp_type();
    assert_eq!(
        fields,
        [
            ("sku", DataType::Int64),
            ("price", DataType::Float64),
            ("active", DataType::Boolean),
            ("launched", DataType::Date32),
            ("updated", timestamp.clone()),
            ("note", DataType::Utf8),
            ("empty", DataType::Utf8),
            ("_syncline_version", timestamp),
            ("_syncline_deleted", DataType::Boolean),
        ]
    );

    let report = h.run(false).await;
    assert_eq!(report.status, Status::Success, "{report:#?}");
    let types = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(c, t)| (c.to_string(), t.to_string()))
            .collect()
    };
    assert_eq!(
        h.column_types("inferred").await,
        types(&[
            ("sku", "bigint"),
            ("price", "double precision"),
            ("active", "boolean"),
            ("launched", "date"),
            ("updated", "timestamp with time zone"),
            ("note", "text"),
            ("empty", "text"),
        ])
    );
    assert_eq!(
        h.column_types("declared").await,
        types(&[
            ("sku", "text"),
            ("price", "text"),
            ("active", "boolean"),
            ("updated", "timestamp with time zone"),
        ])
    );
    assert_eq!(
        h.rows(
            "inferred",
            &[
                "sku",
                "price",
                "(extract(epoch from updated) * 1000)::bigint",
                "note"
            ]
        )
        .await,
        vec![
            vec![
                Some("1".into()),
                Some("9.99".into()),
                Some("1704103200000".into()),
                Some("first".into())
            ],
            vec![
                Some("2".into()),
                Some("10".into()),
                Some("1706781600000".into()),
                None
            ],
        ]
    );
    assert_eq!(
        h.rows("declared", &["sku", "price"]).await,
        vec![
            vec![Some("1".into()), Some("9.99".into())],
            vec![Some("2".into()), Some("10".into())],
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_column_skips_rows_below_the_saved_cursor() {
    let h = FilesHarness::start().await;
    h.write_config(
        &["contacts"],
        "[source.files.contacts]\nglob = \"*.jsonl\"\nformat = \"jsonl\"\nkey = \"id\"\n\
         cursor_column = \"updated_at\"\nversion_column = \"updated_at\"\n\
         [source.files.contacts.schema]\nid = \"int64\"\nemail = \"utf8\"\nupdated_at = \"timestamp\"\n",
    );
    let line = |id: i64, email: &str, hour: i64| {
        format!(
            "{{\"id\": {id}, \"email\": \"{email}\", \"updated_at\": {}}}\n",
            T0 + hour * HOUR
        )
    };
    h.write_file(
        "day-1.jsonl",
        &[
            line(1, "one@x", 10),
            line(2, "two@x", 11),
            line(3, "three@x", 12),
        ]
        .concat(),
        T0,
    );
    let first = h.run(false).await;
    let contacts = report_stream(&first, "contacts");
    assert_eq!(contacts.rows_inserted, 3, "{first:#?}");
    assert_eq!(
        contacts.cursor.unwrap().to,
        T0 + 12 * HOUR,
        "the largest value read"
    );

    // A later export repeats old rows: below the cursor they are skipped (even changed), at
    // the cursor they are read again, above it they are new.
    h.write_file(
        "day-2.jsonl",
        &[
            line(1, "stale@x", 9),
            line(2, "two@x", 11),
            line(3, "THREE@x", 12),
            line(4, "four@x", 13),
        ]
        .concat(),
        T0 + HOUR,
    );
    let second = h.run(false).await;
    let contacts = report_stream(&second, "contacts");
    assert_eq!(contacts.status, Status::Success, "{contacts:#?}");
    assert_eq!(contacts.rows_extracted, 2, "{contacts:#?}");
    assert_eq!((contacts.rows_inserted, contacts.rows_updated), (1, 1));
    assert_eq!(contacts.cursor.unwrap().to, T0 + 13 * HOUR);
    assert_eq!(
        h.rows("contacts", &["id", "email"]).await,
        [(1, "one@x"), (2, "two@x"), (3, "THREE@x"), (4, "four@x")]
            .iter()
            .map(|(id, email)| vec![Some(id.to_string()), Some(email.to_string())])
            .collect::<Vec<_>>()
    );
}

#[test]
fn config_errors_exit_2_and_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("exports")).unwrap();
    let config = dir.path().join("files.toml");
    let env = [(
        "TEST_DATABASE_URL",
        "postgres://postgres@127.0.0.1:1/none".to_string(),
    )];
    let cases = [
        (
            "glob = \"contacts/[a-\"\nformat = \"jsonl\"\nkey = \"id\"\n",
            "`source.files.contacts.glob` is not a valid glob",
        ),
        (
            "glob = \"*.xml\"\nformat = \"xml\"\nkey = \"id\"\n",
            "`source.files.contacts.format` \"xml\" is not a known format",
        ),
        (
            "glob = \"*.jsonl\"\nformat = \"jsonl\"\nkey = \"id\"\ndelimiter = \";\"\n",
            "`source.files.contacts.delimiter` applies only to format = \"csv\"",
        ),
        (
            "glob = \"*.csv\"\nformat = \"csv\"\nkey = \"id\"\n[source.files.contacts.schema]\nid = \"integer\"\n",
            "`source.files.contacts.schema.id` type \"integer\" is not one of",
        ),
        (
            "glob = \"*.csv\"\nformat = \"csv\"\nkey = \"id\"\nsheet = \"x\"\n",
            "unknown field `sheet`",
        ),
        (
            "glob = \"*.csv\"\nformat = \"csv\"\nkey = \"id\"\nmax_record_bytes = 0\n",
            "`source.files.contacts.max_record_bytes` must be at least 1",
        ),
    ];
    for (table, wanted) in cases {
        std::fs::write(
            &config,
            files_config(
                dir.path(),
                &["contacts"],
                &format!("[source.files.contacts]\n{table}"),
            ),
        )
        .unwrap();
        let (code, stderr) = run_binary(&config, &[], &env);
        assert_eq!(code, 2, "{table}: {stderr}");
        assert!(stderr.contains(wanted), "{table}: {stderr}");
        assert!(
            stderr.contains("files.toml:"),
            "the line is named: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_on_s3_load_incrementally() {
    use object_store::ObjectStoreExt;
    use object_store::path::Path;

    let h = FilesHarness::start().await;
    let moto = crate::support::files::Moto::start("exports").await;
    let store = moto.store("exports");
    let put = |path: &'static str, body: &'static str| {
        let store = &store;
        async move {
            store
                .put(&Path::from(path), body.as_bytes().to_vec().into())
                .await
                .expect("put export");
        }
    };
    put(
        "crm/contacts/a.jsonl",
        "{\"id\": 1, \"email\": \"one@x\"}\n{\"id\": 2, \"email\": \"two@x\"}\n",
    )
    .await;
    put("crm/deals/a.jsonl", "{\"id\": 9}\n").await;
    put("other/contacts/a.jsonl", "{\"id\": 8}\n").await;
    let mut text = files_config(h.dir.path(), &["contacts"], "");
    text = text.replace(
        &format!("url = \"file://{}/exports\"", h.dir.path().display()),
        "url = \"s3://exports/crm\"",
    );
    text.push_str(&format!(
        "[source.s3]\nendpoint = \"{}\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\nallow_http = true\n\
         [source.files.contacts]\nglob = \"contacts/*.jsonl\"\nformat = \"jsonl\"\nkey = \"id\"\n",
        moto.endpoint
    ));
    std::fs::write(&h.config_path, text).unwrap();

    let first = h.run(false).await;
    assert_eq!(first.status, Status::Success, "{first:#?}");
    assert_eq!(report_stream(&first, "contacts").rows_inserted, 2);
    let idle = h.run(false).await;
    assert_eq!(
        report_stream(&idle, "contacts").rows_extracted,
        0,
        "{idle:#?}"
    );

    // A new object and a rewritten one (a new e_tag).
    put(
        "crm/contacts/b.jsonl",
        "{\"id\": 3, \"email\": \"three@x\"}\n",
    )
    .await;
    put(
        "crm/contacts/a.jsonl",
        "{\"id\": 1, \"email\": \"one@x\"}\n{\"id\": 2, \"email\": \"TWO@x\"}\n",
    )
    .await;
    let second = h.run(false).await;
    let contacts = report_stream(&second, "contacts");
    assert_eq!(contacts.status, Status::Success, "{second:#?}");
    assert_eq!(contacts.rows_extracted, 3);
    assert_eq!(
        h.rows("contacts", &["id", "email"]).await,
        [(1, "one@x"), (2, "TWO@x"), (3, "three@x")]
            .iter()
            .map(|(id, email)| vec![Some(id.to_string()), Some(email.to_string())])
            .collect::<Vec<_>>()
    );
}

/// PostgreSQL cannot store NUL in text: one such value used to fail the whole merge, on every
/// retry. Every destination now gets U+FFFD in its place, and the report counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_text_is_replaced_and_counted_instead_of_failing_the_merge() {
    let h = FilesHarness::start().await;
    h.write_config(
        &["contacts"],
        "[source.files.contacts]\nglob = \"*.jsonl\"\nformat = \"jsonl\"\nkey = \"id\"\n\
         [source.files.contacts.schema]\nid = \"int64\"\nemail = \"utf8\"\n",
    );
    h.write_file(
        "a.jsonl",
        "{\"id\": 1, \"email\": \"one\\u0000@x\"}\n{\"id\": 2, \"email\": \"two@x\"}\n",
        T0,
    );
    let report = h.run(false).await;
    let contacts = report_stream(&report, "contacts");
    assert_eq!(contacts.status, Status::Success, "{contacts:#?}");
    assert_eq!(contacts.values_replaced, 1, "{contacts:#?}");
    assert_eq!(
        h.rows("contacts", &["id", "email"]).await,
        vec![
            vec![Some("1".to_string()), Some("one\u{FFFD}@x".to_string())],
            vec![Some("2".to_string()), Some("two@x".to_string())],
        ]
    );
}

/// Without a version column a row's version is its file's last-modified time. A file touched or
/// copied (same bytes, a newer time) must not put its older rows over newer ones loaded from a
/// later file: its content was loaded before, so it is not read again. A file with new content
/// is read as usual. Run through the binary, with the JSON report it writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touched_or_copied_older_file_never_overwrites_newer_rows() {
    let h = FilesHarness::start().await;
    h.write_config(
        &["contacts"],
        "[source.files.contacts]\nglob = \"*.jsonl\"\nformat = \"jsonl\"\nkey = \"id\"\n\
         [source.files.contacts.schema]\nid = \"int64\"\nemail = \"utf8\"\n",
    );
    let report_path = h.dir.path().join("report.json");
    let report = report_path.to_str().expect("utf-8 path");
    let run = |what: &'static str| {
        let (code, stderr) = h.run_binary(&["--report", report]);
        assert_eq!(code, 0, "{what}: {stderr}");
        let json = std::fs::read_to_string(&report_path).expect("the run report");
        let report: syncline::reconcile::report::RunReport =
            serde_json::from_str(&json).expect("a run report");
        report_stream(&report, "contacts").clone()
    };
    let emails = || async {
        h.rows("contacts", &["id", "email"])
            .await
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(Option::unwrap_or_default)
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect::<Vec<_>>()
    };
    let older = "{\"id\": 1, \"email\": \"old@x\"}\n{\"id\": 2, \"email\": \"two@x\"}\n";
    h.write_file("a.jsonl", older, T0);
    assert_eq!(run("first").rows_inserted, 2);
    h.write_file("b.jsonl", "{\"id\": 1, \"email\": \"new@x\"}\n", T0 + HOUR);
    assert_eq!(run("newer file").rows_updated, 1);
    assert_eq!(emails().await, ["1|new@x", "2|two@x"]);

    // a.jsonl touched: the same bytes, a newer last-modified time than b.jsonl.
    h.write_file("a.jsonl", older, T0 + 2 * HOUR);
    let touched = run("touched");
    assert_eq!(touched.status, Status::Success, "{touched:#?}");
    assert_eq!(emails().await, ["1|new@x", "2|two@x"]);
    assert_eq!(touched.rows_extracted, 0, "{touched:#?}");

    // a.jsonl copied under another name, newer still.
    h.write_file("c.jsonl", older, T0 + 3 * HOUR);
    let copied = run("copied");
    assert_eq!(copied.rows_extracted, 0, "{copied:#?}");
    assert_eq!(emails().await, ["1|new@x", "2|two@x"]);

    // A full refresh reads every content once, at the version it was first given.
    let (code, stderr) = h.run_binary(&["--full-refresh", "--report", report]);
    assert_eq!(code, 0, "full refresh: {stderr}");
    assert_eq!(emails().await, ["1|new@x", "2|two@x"]);

    // New bytes are read: the file's time is their version.
    h.write_file(
        "a.jsonl",
        "{\"id\": 1, \"email\": \"newest@x\"}\n{\"id\": 2, \"email\": \"two@x\"}\n",
        T0 + 4 * HOUR,
    );
    let changed = run("changed");
    assert_eq!(changed.rows_extracted, 2, "{changed:#?}");
    assert_eq!(emails().await, ["1|newest@x", "2|two@x"]);
}

/// The resurrection the tombstones stop, end to end: with a `version_column`, an export read
/// again (here touched) carries its rows' own, older versions. A key a later export deleted
/// (hard deletes: the row is gone) must stay deleted; before tombstones the older row came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_deleted_key_stays_deleted_when_an_older_export_is_read_again() {
    let h = FilesHarness::start().await;
    h.write_config(
        &["contacts"],
        "[source.files.contacts]\nglob = \"*.jsonl\"\nformat = \"jsonl\"\nkey = \"id\"\n\
         version_column = \"updated_at\"\ndeleted_column = \"archived\"\n\
         [source.files.contacts.schema]\nid = \"int64\"\nemail = \"utf8\"\n\
         updated_at = \"timestamp\"\narchived = \"boolean\"\n",
    );
    let older = "{\"id\": 1, \"email\": \"one@x\", \"updated_at\": \"2024-03-01T00:00:00Z\"}\n\
                 {\"id\": 2, \"email\": \"two@x\", \"updated_at\": \"2024-03-01T00:00:00Z\"}\n";
    h.write_file("a.jsonl", older, T0);
    let (code, stderr) = h.run_binary(&[]);
    assert_eq!(code, 0, "{stderr}");
    h.write_file(
        "b.jsonl",
        "{\"id\": 1, \"email\": \"one@x\", \"updated_at\": \"2024-03-02T00:00:00Z\", \"archived\": true}\n",
        T0 + HOUR,
    );
    let (code, stderr) = h.run_binary(&[]);
    assert_eq!(code, 0, "{stderr}");
    let ids = || async {
        h.rows("contacts", &["id"])
            .await
            .into_iter()
            .map(|row| row[0].clone().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids().await, ["2"]);

    // a.jsonl read again: its row for 1 is older than the delete.
    h.write_file("a.jsonl", older, T0 + 2 * HOUR);
    let (code, stderr) = h.run_binary(&[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids().await, ["2"]);
    // So does a full refresh, which reads every export again.
    let (code, stderr) = h.run_binary(&["--full-refresh"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids().await, ["2"]);
}

/// `syncline deadletters` groups what could not load by field and reason across loads and
/// files (the `path:line:` of each reason set apart), and exports every record whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_grouped_by_reason_and_exported_whole() {
    let h = FilesHarness::start().await;
    h.write_config(&["deals"], DEALS_TABLE);
    let bad = |ids: std::ops::Range<i64>| -> String {
        ids.map(|i| format!("D-{i};deal {i};not-a-number;true;2024-04-01\n"))
            .collect()
    };
    h.write_file(
        "deals/a.csv",
        &format!("{}{}D-9;late;1;true;2024-13-45\n", DEALS, bad(10..13)),
        T0,
    );
    assert_eq!(h.run(false).await.status, Status::Success);
    h.write_file(
        "deals/b.csv",
        &format!("deal_id;name;amount;closed;close_date\n{}", bad(20..22)),
        T0 + HOUR,
    );
    assert_eq!(h.run(false).await.status, Status::Success);

    let deadletters = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_syncline"))
            .arg("deadletters")
            .arg("--config")
            .arg(&h.config_path)
            .args(args)
            .envs(h.env())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, text, stderr) = deadletters(&[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(text.starts_with("deals: 6 dead letters\n"), "{text}");
    let amount = text
        .lines()
        .find(|l| l.contains("× amount:"))
        .unwrap_or_else(|| panic!("an amount group: {text}"));
    assert!(
        amount.trim_start().starts_with("5 × amount:") && amount.ends_with("(2 loads)"),
        "five bad amounts over two loads are one group: {amount}"
    );
    assert!(text.contains("× close_date:"), "{text}");
    assert!(
        text.contains("D-10;deal 10;not-a-number"),
        "examples show the raw record: {text}"
    );

    let (code, lines, _) = deadletters(&["--export", "jsonl"]);
    assert_eq!(code, Some(0));
    let letters: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 6);
    assert!(
        letters
            .iter()
            .all(|l| l["stream"] == "deals" && l["load_id"].is_string())
    );
    assert!(
        letters
            .iter()
            .any(|l| l["key"] == "D-21" && l["reason"].as_str().unwrap().contains("b.csv:3:")),
        "the export keeps where each record was: {lines}"
    );

    let out = h.exports().join("../letters.csv");
    let (code, _, _) = deadletters(&["--export", "csv", "--output", out.to_str().unwrap()]);
    assert_eq!(code, Some(0));
    let mut csv = csv::Reader::from_path(&out).unwrap();
    assert_eq!(
        csv.headers().unwrap().iter().collect::<Vec<_>>(),
        ["stream", "load_id", "key", "field", "reason", "raw"]
    );
    assert_eq!(csv.records().count(), 6);

    let (code, _, stderr) = deadletters(&["--stream", "nope"]);
    assert_eq!(
        code,
        Some(2),
        "an unknown stream is a usage error: {stderr}"
    );
}

/// The data files of a lake table: those its log adds, and those its folder holds.
fn lake_files(
    table: &std::path::Path,
) -> (
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
) {
    let mut added = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(table.join("_delta_log")).expect("a Delta log") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let action: serde_json::Value = serde_json::from_str(line).unwrap();
                if let Some(file) = action["add"]["path"].as_str() {
                    added.insert(file.to_string());
                }
            }
        }
    }
    let held = std::fs::read_dir(table)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".parquet"))
        .collect();
    (added, held)
}

/// A first load into the lake is written straight into the table's files while it is staged,
/// as an append. A load whose merge is not an append (a key twice, a delete) must be merged
/// instead: the newest version of each key, the deleted key absent, and no file of the
/// abandoned append left in the table's folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_lake_load_with_a_repeated_key_or_a_delete_is_merged_not_appended() {
    for (case, extra) in [
        (
            "repeated",
            "{\"id\": 7, \"email\": \"newer@x\", \"updated_at\": \"2024-03-02T00:00:00Z\"}\n",
        ),
        (
            "deleted",
            "{\"id\": 9, \"email\": \"nine@x\", \"updated_at\": \"2024-03-02T00:00:00Z\", \"archived\": true}\n",
        ),
        ("plain", ""),
    ] {
        let h = FilesHarness::start().await;
        h.write_lake_config(
            &["contacts"],
            "[source.files.contacts]\nglob = \"*.jsonl\"\nformat = \"jsonl\"\nkey = \"id\"\n\
             version_column = \"updated_at\"\ndeleted_column = \"archived\"\n\
             [source.files.contacts.schema]\nid = \"int64\"\nemail = \"utf8\"\n\
             updated_at = \"timestamp\"\narchived = \"boolean\"\n",
        );
        let mut lines: String = (1..=2500)
            .map(|id| {
                format!("{{\"id\": {id}, \"email\": \"{id}@x\", \"updated_at\": \"2024-03-01T00:00:00Z\"}}\n")
            })
            .collect();
        lines.push_str(extra);
        h.write_file("a.jsonl", &lines, T0);
        let report = h.run(false).await;
        assert_eq!(report.status, Status::Success, "{case}: {report:#?}");
        let stream = &report.streams[0];
        assert!(stream.reconciliation.matched, "{case}: {stream:#?}");
        let found = h
            .lake_rows(
                "SELECT count(*), count(DISTINCT id), max(CASE WHEN id = 7 THEN email END), \
                 count(*) FILTER (WHERE id = 9) FROM contacts",
            )
            .await;
        let cell = |i: usize| found[0][i].clone().unwrap();
        let (rows, nine) = match case {
            "deleted" => ("2499", "0"),
            _ => ("2500", "1"),
        };
        let seven = if case == "repeated" { "newer@x" } else { "7@x" };
        assert_eq!(
            (cell(0), cell(1), cell(2), cell(3)),
            (rows.into(), rows.into(), seven.into(), nine.into()),
            "{case}"
        );
        let (added, held) = lake_files(&h.dir.path().join("stage/files/lake/contacts"));
        assert!(!added.is_empty(), "{case}");
        assert_eq!(
            added, held,
            "{case}: files the table's log does not reference"
        );
    }
}

const DECIMAL_TABLES: &str = r#"
[source.files.invoices]
glob = "invoices.jsonl"
format = "jsonl"
key = "id"
[source.files.invoices.schema]
id = "int64"
amount = "decimal(18,2)"
[source.files.rates]
glob = "rates.csv"
format = "csv"
key = "code"
[source.files.rates.schema]
code = "utf8"
rate = "numeric(38,10)"
"#;

/// JSONL numbers and strings, and CSV text, each an exact decimal; a value the precision cannot
/// hold and one that is not a number are dead letters; the rest load.
const INVOICES_JSONL: &str = "{\"id\": 1, \"amount\": 0.1}\n\
     {\"id\": 2, \"amount\": \"12345.67\"}\n\
     {\"id\": 3, \"amount\": 2.345}\n\
     {\"id\": 4, \"amount\": -2.345}\n\
     {\"id\": 5, \"amount\": 9999999999999999.99}\n\
     {\"id\": 6, \"amount\": null}\n\
     {\"id\": 7, \"amount\": 1.5e3}\n\
     {\"id\": 8, \"amount\": 12345678901234567}\n\
     {\"id\": 9, \"amount\": \"lots\"}\n";

const RATES_CSV: &str = "code,rate\n\
     a,0.1\n\
     b,1234567890123456789012345678.0123456789\n\
     c,-0.00000000005\n\
     d,\n\
     e,12345678901234567890123456789\n";

/// What the destination holds, as PostgreSQL prints `numeric(P,S)` (and arrow a Decimal128).
fn decimal_rows() -> (Vec<Vec<Option<String>>>, Vec<Vec<Option<String>>>) {
    let row = |key: &str, value: Option<&str>| vec![Some(key.to_owned()), value.map(str::to_owned)];
    (
        vec![
            row("1", Some("0.10")),
            row("2", Some("12345.67")),
            // Half away from zero, as the stream `cast` (and PostgreSQL) round.
            row("3", Some("2.35")),
            row("4", Some("-2.35")),
            row("5", Some("9999999999999999.99")),
            row("6", None),
            row("7", Some("1500.00")),
        ],
        vec![
            row("a", Some("0.1000000000")),
            row("b", Some("1234567890123456789012345678.0123456789")),
            row("c", Some("-0.0000000001")),
            row("d", None),
        ],
    )
}

/// The dead letters: the key and the column named, the reason without the value.
async fn decimal_dead_letters(h: &FilesHarness, report: &syncline::reconcile::report::RunReport) {
    let invoices = report_stream(report, "invoices");
    let letters = h.dead_letters(invoices).await;
    let summary: Vec<(String, Option<String>)> = letters
        .iter()
        .map(|l| (l.key.clone(), l.field.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            ("8".to_owned(), Some("amount".to_owned())),
            ("9".to_owned(), Some("amount".to_owned()))
        ],
        "{letters:#?}"
    );
    assert!(
        letters[0].reason.contains(
            "amount: more digits than decimal(18,2) holds (16 before the point, 2 after)"
        ) && !letters[0].reason.contains("12345678901234567"),
        "{letters:#?}"
    );
    assert!(
        letters[1]
            .reason
            .contains("amount: not a number, which a decimal(18,2) column needs")
            && !letters[1].reason.contains("lots"),
        "{letters:#?}"
    );
    let rates = report_stream(report, "rates");
    let letters = h.dead_letters(rates).await;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert!(
        letters[0]
            .reason
            .starts_with("rates.csv:6: rate: more digits than decimal(38,10) holds"),
        "{letters:#?}"
    );
}

/// `decimal(P,S)` (or `numeric(P,S)`) declared in the files source's schema loads PostgreSQL
/// `numeric(P,S)` with every digit, straight from the file's text, never through a float.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_decimals_load_exact_values_into_postgres() {
    let h = FilesHarness::start().await;
    h.write_file("invoices.jsonl", INVOICES_JSONL, T0);
    h.write_file("rates.csv", RATES_CSV, T0);
    h.write_config(&["invoices", "rates"], DECIMAL_TABLES);

    let report = h.run(false).await;
    assert_eq!(report.status, Status::Success, "{report:#?}");
    let invoices = report_stream(&report, "invoices");
    assert_eq!(
        (invoices.rows_inserted, invoices.rows_dead_lettered),
        (7, 2),
        "{invoices:#?}"
    );
    assert!(invoices.reconciliation.matched, "{invoices:#?}");
    let rates = report_stream(&report, "rates");
    assert_eq!(
        (rates.rows_inserted, rates.rows_dead_lettered),
        (4, 1),
        "{rates:#?}"
    );
    assert!(rates.reconciliation.matched, "{rates:#?}");
    let client = h.client().await;
    for (table, column, precision, scale) in
        [("invoices", "amount", 18, 2), ("rates", "rate", 38, 10)]
    {
        let row = client
            .query_one(
                "SELECT data_type::text, numeric_precision::int, numeric_scale::int \
                 FROM information_schema.columns \
                 WHERE table_schema = 'files' AND table_name = $1 AND column_name = $2",
                &[&table, &column],
            )
            .await
            .expect("the column exists");
        let found: (String, i32, i32) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(found, ("numeric".to_owned(), precision, scale), "{table}");
    }
    let (invoice_rows, rate_rows) = decimal_rows();
    assert_eq!(h.rows("invoices", &["id", "amount"]).await, invoice_rows);
    assert_eq!(h.rows("rates", &["code", "rate"]).await, rate_rows);
    decimal_dead_letters(&h, &report).await;
}

/// The same declared decimals in the lake: a Delta `decimal(P,S)` holding the same digits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_decimals_load_exact_values_into_the_lake() {
    let h = FilesHarness::start().await;
    h.write_file("invoices.jsonl", INVOICES_JSONL, T0);
    h.write_file("rates.csv", RATES_CSV, T0);
    h.write_lake_config(&["invoices", "rates"], DECIMAL_TABLES);

    let report = h.run(false).await;
    assert_eq!(report.status, Status::Success, "{report:#?}");
    let (invoice_rows, rate_rows) = decimal_rows();
    assert_eq!(
        h.lake_rows("SELECT id, amount FROM invoices ORDER BY id")
            .await,
        invoice_rows
    );
    assert_eq!(
        h.lake_rows("SELECT code, rate FROM rates ORDER BY code")
            .await,
        rate_rows
    );
    let types = h
        .lake_rows(
            "SELECT arrow_typeof(amount), (SELECT arrow_typeof(rate) FROM rates LIMIT 1) \
             FROM invoices LIMIT 1",
        )
        .await;
    assert_eq!(
        types,
        [[
            Some("Decimal128(18, 2)".to_owned()),
            Some("Decimal128(38, 10)".to_owned())
        ]]
    );
    decimal_dead_letters(&h, &report).await;
}

/// A declared decimal no destination holds is a configuration error from `check` and from
/// `run` (exit 2, nothing read), naming the stream, the column and what to write.
#[test]
fn a_declared_decimal_without_digits_or_beyond_38_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("exports")).unwrap();
    std::fs::write(dir.path().join("exports/invoices.jsonl"), "{\"id\": 1}\n").unwrap();
    let config = dir.path().join("files.toml");
    let env = [(
        "TEST_DATABASE_URL",
        "postgres://postgres@127.0.0.1:1/none".to_string(),
    )];
    for (kind, says) in [
        (
            "decimal(40,2)",
            "a decimal holds 1 to 38 digits, which is what Snowflake and Delta store: write decimal(P,2) with P at most 38",
        ),
        (
            "numeric(4,6)",
            "the scale (6 digits after the point) is more than the precision (4 digits in all): write decimal(6,6) or more digits",
        ),
        ("decimal", "a decimal needs its digits: write decimal(P,S)"),
    ] {
        let tables = format!(
            "[source.files.invoices]\nglob = \"*.jsonl\"\nformat = \"jsonl\"\nkey = \"id\"\n\
             [source.files.invoices.schema]\nid = \"int64\"\namount = \"{kind}\"\n"
        );
        std::fs::write(&config, files_config(dir.path(), &["invoices"], &tables)).unwrap();
        let wanted = format!("`source.files.invoices.schema.amount` type \"{kind}\": {says}");
        let (code, stderr) = run_binary(&config, &[], &env);
        assert_eq!(code, 2, "{kind}: {stderr}");
        assert!(stderr.contains(&wanted), "{kind}: {stderr}");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_syncline"))
            .args(["check", "--config"])
            .arg(&config)
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .output()
            .expect("spawn syncline");
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(2), "{kind}: {out}");
        assert!(out.contains(&wanted), "{kind}: {out}");
        assert!(
            !dir.path().join("stage/files/invoices/loads").exists(),
            "{kind}: a load was staged"
        );
    }
}
