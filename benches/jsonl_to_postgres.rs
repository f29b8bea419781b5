//! Benchmark: 1,000,000 JSONL contact records (18 fields: integers, numbers, booleans,
//! dates, timestamps, text, nulls, nested arrays) in four files → the file source → Parquet
//! staging → a throwaway PostgreSQL. The schema is inferred. Prints wall time, rows/s and the
//! peak memory (max RSS) of the `syncline run` process; generating the files is not timed.
//!
//! `cargo bench --bench jsonl_to_postgres` (release). `SYNCLINE_BENCH_ROWS` changes the size.

#[path = "../tests/support/pg.rs"]
mod pg;
#[allow(dead_code)]
mod support;

use std::io::{BufWriter, Write};

use support::measure_run;

const FILES: usize = 4;
const FIRST_NAMES: &[&str] = &[
    "Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "Edsger", "Radia",
];
const LAST_NAMES: &[&str] = &[
    "Lovelace", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Allen",
    "Dijkstra", "Perlman",
];
const STAGES: &[&str] = &[
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
];
const COUNTRIES: &[&str] = &["US", "DE", "FR", "GB", "JP", "BR", "IN", "CA"];

/// A small deterministic generator (xorshift64*), so every run loads the same data.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn write_contact(out: &mut impl Write, id: usize, random: &mut Random) -> std::io::Result<()> {
    let first = random.pick(FIRST_NAMES);
    let last = random.pick(LAST_NAMES);
    let created = 1_600_000_000 + random.below(100_000_000);
    let updated = created + random.below(10_000_000);
    let created = chrono::DateTime::from_timestamp(created as i64, 0).unwrap();
    let updated = chrono::DateTime::from_timestamp(updated as i64, 0).unwrap();
    let notes = if random.below(4) == 0 {
        "null".to_string()
    } else {
        format!(
            "\"Met at conference {}; follow up in Q{}\"",
            random.below(50),
            random.below(4) + 1
        )
    };
    writeln!(
        out,
        r#"{{"id":{id},"email":"{f}.{l}.{id}@example.com","first_name":"{first}","last_name":"{last}","phone":"+1-555-{p:07}","company":"{l} Industries {c}","job_title":"Engineer {j}","city":"City {city}","country":"{country}","lifecycle_stage":"{stage}","lead_score":{score},"annual_revenue":{revenue:.2},"is_customer":{customer},"birth_date":"{by}-{bm:02}-{bd:02}","created_at":"{created}","updated_at":"{updated}","tags":["t{t1}","t{t2}"],"notes":{notes}}}"#,
        f = first.to_lowercase(),
        l = last.to_lowercase(),
        p = random.below(10_000_000),
        c = random.below(1000),
        j = random.below(5),
        city = random.below(500),
        country = random.pick(COUNTRIES),
        stage = random.pick(STAGES),
        score = random.below(101),
        revenue = random.below(1_000_000_000) as f64 / 100.0,
        customer = random.below(3) == 0,
        by = 1950 + random.below(55),
        bm = random.below(12) + 1,
        bd = random.below(28) + 1,
        created = created.format("%Y-%m-%dT%H:%M:%SZ"),
        updated = updated.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        t1 = random.below(20),
        t2 = random.below(20),
    )
}

fn main() {
    let rows = support::bench_rows(1_000_000);
    let pg = pg::TestPostgres::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(&exports).expect("exports folder");
    let mut random = Random(0x5EED_1234_ABCD_0001);
    let mut bytes = 0;
    for file in 0..FILES {
        let path = exports.join(format!("contacts-{file:02}.jsonl"));
        let mut out = BufWriter::new(std::fs::File::create(&path).expect("create export"));
        for id in (1..=rows).filter(|id| id % FILES == file) {
            write_contact(&mut out, id, &mut random).expect("write export");
        }
        out.flush().expect("flush export");
        bytes += std::fs::metadata(&path).expect("export size").len();
    }

    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[pipeline]\nname = \"bench\"\nbatch_rows = 10000\n[staging]\nurl = \"file://{dir}/stage\"\n\
             [source]\ntype = \"files\"\nurl = \"file://{dir}/exports\"\nstreams = [\"contacts\"]\n\
             [source.files.contacts]\nglob = \"contacts-*.jsonl\"\nformat = \"jsonl\"\nkey = \"id\"\n\
             [destination]\ntype = \"postgres\"\nurl = \"{url}\"\nschema = \"bench\"\n",
            dir = dir.path().display(),
            url = pg.url
        ),
    )
    .expect("write config");

    let report = dir.path().join("report.json");
    let run = measure_run("jsonl", &config, &report);
    let stream = &run.stream;
    let inserted = stream["rows_inserted"].as_u64().unwrap_or(0);
    assert_eq!(inserted as usize, rows, "every record arrived: {stream}");
    assert_eq!(stream["rows_dead_lettered"].as_u64(), Some(0), "{stream}");
    println!(
        "jsonl_to_postgres: {rows} records ({:.0} MB of JSONL in {FILES} files), {inserted} inserted in {:.2} s = {:.0} rows/s, peak RSS {:.1} MiB",
        bytes as f64 / 1e6,
        run.elapsed.as_secs_f64(),
        rows as f64 / run.elapsed.as_secs_f64(),
        run.peak_rss_mib
    );
}
