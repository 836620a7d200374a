//! `oxchaos`: runs the fault-injection suite (see `docs/FAULTS.md`). The outer process plans
//! the runs, makes the PKI, and for each run creates a network namespace, re-runs itself
//! inside it (`oxchaos inner`), and removes the namespace with everything in it afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use oxcd_chaos::fault::{self, Fault};
use oxcd_chaos::netns::{self, Netns};
use oxcd_chaos::report::{self, Row, Timeline};
use oxcd_chaos::run::{self, Bug, Outcome, Spec};
use rand::{seq::SliceRandom as _, Rng as _, SeedableRng as _};

#[derive(Parser)]
#[command(
    name = "oxchaos",
    about = "Jepsen-style fault injection for oxcd: real TLS clusters in a network namespace, recorded histories, linearizability and watch checks"
)]
struct Cli {
    #[command(subcommand)]
    inner: Option<Inner>,
    /// Soak: keep starting runs with random faults until this much time is spent (e.g. 30m).
    /// Without it: the short profile, one run per fault type plus the checker self-tests.
    #[arg(long, value_parser = oxcd_gocompat::duration::parse)]
    duration: Option<Duration>,
    /// Seed of the fault schedule and the workload (random when not given; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Members of the cluster (3 or 5).
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Load per run, in seconds (short profile default 10, soak default 40).
    #[arg(long)]
    run_seconds: Option<u64>,
    /// Only these faults (comma-separated).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<Fault>,
    /// Run only the injected-bug self-test with this bug (the run must FAIL).
    #[arg(long)]
    inject_bug: Option<Bug>,
    /// Skip the self-tests that prove the checks catch injected bugs.
    #[arg(long)]
    no_self_test: bool,
    /// Where runs, logs and the report go.
    #[arg(long, default_value = "target/chaos/out")]
    out: PathBuf,
    /// The oxcd binary (a chaos build with `--features failpoints` for the failpoint faults).
    #[arg(long, default_value = "target/chaos/release/oxcd")]
    oxcd: PathBuf,
    /// The oxcert binary (makes the cluster's PKI).
    #[arg(long, default_value = "target/chaos/release/oxcert")]
    oxcert: PathBuf,
    /// Keep the data dirs of passing runs too.
    #[arg(long)]
    keep: bool,
}

#[derive(Subcommand)]
enum Inner {
    /// (internal) one run, inside its network namespace
    #[command(hide = true)]
    Inner { spec: PathBuf },
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Inner::Inner { spec }) = &cli.inner {
        return inner(spec);
    }
    match outer(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("oxchaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn inner(spec_path: &Path) -> ExitCode {
    let spec: Spec = match std::fs::read(spec_path)
        .map_err(anyhow::Error::from)
        .and_then(|b| Ok(serde_json::from_slice(&b)?))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("oxchaos inner: cannot read {}: {e:#}", spec_path.display());
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oxchaos inner: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = netns::sh("ip", &["link", "set", "lo", "up"]) {
        eprintln!("oxchaos inner: {e:#}");
    }
    let outcome = rt.block_on(run::run(&spec)).unwrap_or_else(|e| Outcome {
        violations: vec![format!("the run could not complete: {e:#}")],
        ..Default::default()
    });
    let path = spec.dir.join("result.json");
    match serde_json::to_vec_pretty(&outcome).map(|b| std::fs::write(&path, b)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        _ => {
            eprintln!("oxchaos inner: cannot write {}", path.display());
            ExitCode::from(2)
        }
    }
}

/// The runs to do: (faults, bug, expect a violation).
#[derive(Clone)]
struct Plan {
    faults: Vec<Fault>,
    bug: Option<Bug>,
}

/// What every run of the suite shares.
struct Suite {
    seed: u64,
    members: usize,
    run_ms: u64,
    soak: bool,
    keep: bool,
    out: PathBuf,
    pki: PathBuf,
    oxcd: PathBuf,
}

/// Where the plans come from: a fixed list (the short profile, one self-test), or, in a
/// soak, random combinations of the chosen faults until the time is spent.
enum Schedule {
    Fixed(std::vec::IntoIter<Plan>),
    Soak {
        duration: Duration,
        chosen: Vec<Fault>,
        rng: Box<rand::rngs::StdRng>,
    },
}

/// What the runs added up to.
#[derive(Default)]
struct Tally {
    rows: BTreeMap<String, Row>,
    total: Row,
    timelines: Vec<Timeline>,
    failures: Vec<String>,
}

fn outer(cli: &Cli) -> anyhow::Result<bool> {
    check_cli(cli)?;
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    let seed = cli
        .seed
        .unwrap_or_else(|| rand::thread_rng().gen_range(1..1_000_000));
    let failpoints = has_failpoints(&cli.oxcd);
    let out = std::path::absolute(&cli.out)?;
    std::fs::create_dir_all(&out)?;
    let oxcd = std::path::absolute(&cli.oxcd)?;
    let pki = make_pki(&cli.oxcert, &out)?;
    println!(
        "oxchaos: seed {seed}, {} members, output in {}{}",
        cli.members,
        out.display(),
        if failpoints {
            ""
        } else {
            " (oxcd built without failpoints: failpoint faults skipped)"
        }
    );
    let (chosen, skipped) = usable_faults(cli, failpoints);
    let soak = cli.duration.is_some();
    let suite = Suite {
        seed,
        members: cli.members,
        run_ms: cli.run_seconds.unwrap_or(if soak { 40 } else { 10 }) * 1000,
        soak,
        keep: cli.keep,
        out,
        pki,
        oxcd,
    };
    let mut schedule = schedule(cli, seed, chosen);
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut i = 0usize;
    loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            tally.failures.push("interrupted (Ctrl-C)".into());
            break;
        }
        let Some(plan) = schedule.next(started) else {
            break;
        };
        let spec = suite.spec(&plan, i);
        let outcome = one_run(&spec)?;
        suite.judge(&plan, &spec, &outcome, &mut tally)?;
        i += 1;
    }
    write_report(&suite, &tally, i, started, &skipped)?;
    Ok(tally.failures.is_empty())
}

/// Refuses to start without root, the tools, the binaries, or with a cluster size the PKI
/// does not cover.
fn check_cli(cli: &Cli) -> anyhow::Result<()> {
    netns::require_root_and_tools()?;
    for (bin, what) in [(&cli.oxcd, "--oxcd"), (&cli.oxcert, "--oxcert")] {
        if !bin.is_file() {
            bail!(
                "{what} {} does not exist: build it (scripts/chaos does: cargo build --release \
                 -p oxcd-server -p oxcert --features oxcd-server/failpoints --target-dir target/chaos)",
                bin.display()
            );
        }
    }
    if cli.members != 3 && cli.members != 5 {
        bail!("--members must be 3 or 5");
    }
    Ok(())
}

/// The faults asked for (all by default) that this oxcd can inject, and the names of those
/// it cannot (failpoint faults without a failpoints build).
fn usable_faults(cli: &Cli, failpoints: bool) -> (Vec<Fault>, Vec<String>) {
    let usable = |f: &Fault| failpoints || !f.needs_failpoints();
    let chosen: Vec<Fault> = if cli.faults.is_empty() {
        Fault::ALL.to_vec()
    } else {
        cli.faults.clone()
    };
    let skipped: Vec<String> = chosen
        .iter()
        .filter(|f| !usable(f))
        .map(|f| f.name())
        .collect();
    let chosen: Vec<Fault> = chosen.into_iter().filter(usable).collect();
    (chosen, skipped)
}

/// `--inject-bug`: that self-test alone; the short profile: one run per fault, then the
/// self-tests; `--duration`: a soak.
fn schedule(cli: &Cli, seed: u64, chosen: Vec<Fault>) -> Schedule {
    if let Some(duration) = cli.duration {
        return Schedule::Soak {
            duration,
            chosen,
            rng: Box::new(rand::rngs::StdRng::seed_from_u64(seed)),
        };
    }
    let mut plans: Vec<Plan> = Vec::new();
    if let Some(bug) = cli.inject_bug {
        plans.push(self_test(bug));
    } else {
        plans.extend(chosen.iter().map(|&f| Plan {
            faults: vec![f],
            bug: None,
        }));
        if !cli.no_self_test {
            plans.push(self_test(Bug::StaleRead));
            plans.push(self_test(Bug::LostWrite));
        }
    }
    Schedule::Fixed(plans.into_iter())
}

impl Schedule {
    /// The next run's plan, or `None` when the suite is done.
    fn next(&mut self, started: Instant) -> Option<Plan> {
        match self {
            Schedule::Fixed(plans) => plans.next(),
            Schedule::Soak {
                duration,
                chosen,
                rng,
            } => {
                if started.elapsed() >= *duration || chosen.is_empty() {
                    return None;
                }
                let k = rng.gen_range(1..=3usize.min(chosen.len()));
                Some(Plan {
                    faults: chosen.choose_multiple(&mut **rng, k).copied().collect(),
                    bug: None,
                })
            }
        }
    }
}

impl Suite {
    /// Run `i` of `plan`. Its seed depends on the suite's seed and what the run does (and, in
    /// a soak, its number), so `--seed S --faults F` reproduces the short profile's run of F.
    fn spec(&self, plan: &Plan, i: usize) -> Spec {
        let label = format!(
            "{}{}",
            fault::join_names(&plan.faults, "+"),
            plan.bug
                .map(|b| format!("-bug-{}", bug_name(b)))
                .unwrap_or_default()
        );
        let salt = fnv1a(&label) ^ if self.soak { i as u64 } else { 0 };
        Spec {
            index: i,
            seed: splitmix(self.seed ^ salt),
            faults: plan.faults.clone(),
            members: self.members,
            duration_ms: self.run_ms,
            dir: self.out.join(format!("{i:03}-{label}")),
            pki: self.pki.clone(),
            oxcd: self.oxcd.clone(),
            bug: plan.bug,
        }
    }

    /// Says whether the run passed, keeps what a failing run needs to be reproduced (and
    /// drops a passing run's data dirs unless `--keep`), and adds the run to the tally.
    fn judge(
        &self,
        plan: &Plan,
        spec: &Spec,
        outcome: &Outcome,
        tally: &mut Tally,
    ) -> anyhow::Result<()> {
        // A self-test passes only if the linearizability checker itself flagged the bug.
        let expect_violation = plan.bug.is_some();
        let failed = if expect_violation {
            !outcome
                .violations
                .iter()
                .any(|v| v.contains("NOT linearizable"))
        } else {
            !outcome.violations.is_empty()
        };
        let name = match plan.bug {
            Some(b) => format!("self-test: bug {}", bug_name(b)),
            None => fault::join_names(&plan.faults, "+"),
        };
        print_run(spec.index, &name, outcome, failed, expect_violation);
        if failed {
            tally.failures.push(format!(
                "run {} [{name}]: {} — reproduce: {}",
                spec.index,
                spec.dir.display(),
                self.reproduce(plan)
            ));
        } else if !self.keep {
            for m in std::fs::read_dir(&spec.dir)?.flatten() {
                if m.path().extension().is_some_and(|e| e == "data") {
                    let _ = std::fs::remove_dir_all(m.path());
                }
            }
        }
        tally.add(plan, name, outcome, &spec.dir);
        Ok(())
    }

    /// The command that runs `plan` again, with the same seed.
    fn reproduce(&self, plan: &Plan) -> String {
        format!(
            "scripts/chaos --seed {} --members {} --run-seconds {} --faults {}{}",
            self.seed,
            self.members,
            self.run_ms / 1000,
            fault::join_names(&plan.faults, ","),
            plan.bug
                .map(|b| format!(" --inject-bug {}", bug_name(b)))
                .unwrap_or_default()
        )
    }
}

/// One line per run, and its first violations.
fn print_run(i: usize, name: &str, outcome: &Outcome, failed: bool, expect_violation: bool) {
    println!(
        "oxchaos: run {i} [{name}] {} ops, {} unknown, {} violations{}",
        outcome.ops,
        outcome.unknowns,
        outcome.violations.len(),
        match (failed, expect_violation) {
            (false, false) => " — ok".to_string(),
            (false, true) => " — ok: the checks caught the injected bug".to_string(),
            (true, true) => " — FAILED: the checks missed the injected bug".to_string(),
            (true, false) => " — FAILED".to_string(),
        }
    );
    for v in outcome.violations.iter().take(10) {
        println!("    {v}");
    }
}

impl Tally {
    /// Counts the run in the row of each of its faults (a self-test: in its own row), and
    /// in the total; keeps its timeline for the suite's picture.
    fn add(&mut self, plan: &Plan, name: String, outcome: &Outcome, dir: &Path) {
        let names: Vec<String> = match plan.bug {
            Some(_) => vec![name],
            None => plan.faults.iter().map(|f| f.name()).collect(),
        };
        let add = |row: &mut Row| {
            row.runs += 1;
            row.ops += outcome.ops;
            row.unknowns += outcome.unknowns;
            row.violations += outcome.violations.len() as u64;
        };
        for n in names {
            add(self.rows.entry(n).or_default());
        }
        add(&mut self.total);
        for w in &outcome.windows {
            if let (Some(r), None) = (w.recovery_ms, plan.bug) {
                let row = self.rows.entry(w.fault.name()).or_default();
                row.recovery_ms_max = Some(row.recovery_ms_max.unwrap_or(0).max(r));
            }
        }
        if let Ok(t) = std::fs::read(dir.join("timeline.json")) {
            if let Ok(t) = serde_json::from_slice::<Timeline>(&t) {
                self.timelines.push(t);
            }
        }
    }
}

/// Writes `report.md` and `timeline.svg`, and prints the table and the result.
fn write_report(
    suite: &Suite,
    tally: &Tally,
    runs: usize,
    started: Instant,
    skipped: &[String],
) -> anyhow::Result<()> {
    let out = &suite.out;
    let seed = suite.seed;
    let table = report::table(&tally.rows, &tally.total);
    std::fs::write(out.join("timeline.svg"), report::svg(&tally.timelines))?;
    let mut md = format!(
        "# oxchaos report\n\nseed {seed}, {} members, {} s of load per run, {} runs in {:.0} s\n\n{table}\n",
        suite.members,
        suite.run_ms / 1000,
        runs,
        started.elapsed().as_secs_f64()
    );
    if !skipped.is_empty() {
        md.push_str(&format!(
            "Skipped (oxcd built without failpoints): {}\n\n",
            skipped.join(", ")
        ));
    }
    md.push_str("Self-test rows must show violations: they prove the checks catch injected bugs.\n\nTimeline: timeline.svg\n\n");
    if tally.failures.is_empty() {
        md.push_str("Result: PASS\n");
    } else {
        md.push_str("Result: FAIL\n\n");
        for f in &tally.failures {
            md.push_str(&format!("- {f}\n"));
        }
    }
    std::fs::write(out.join("report.md"), &md)?;
    println!("\n{table}");
    println!(
        "oxchaos: report {}, picture {}",
        out.join("report.md").display(),
        out.join("timeline.svg").display()
    );
    if tally.failures.is_empty() {
        println!("oxchaos: PASS (seed {seed})");
    } else {
        println!("oxchaos: FAIL (seed {seed}); each failing run's directory holds its history, member logs and spec:");
        for f in &tally.failures {
            println!("  {f}");
        }
    }
    Ok(())
}
fn self_test(bug: Bug) -> Plan {
    Plan {
        faults: match bug {
            Bug::StaleRead => vec![Fault::PartitionLeader],
            Bug::LostWrite => vec![Fault::KillFollower],
        },
        bug: Some(bug),
    }
}

fn bug_name(b: Bug) -> String {
    clap::ValueEnum::to_possible_value(&b)
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether `oxcd` was built with failpoints: such a build refuses a malformed FAILPOINTS.
fn has_failpoints(oxcd: &Path) -> bool {
    std::process::Command::new(oxcd)
        .arg("--version")
        .env("FAILPOINTS", "oxchaos_probe=not-an-action(")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| !s.success())
        .unwrap_or(false)
}

/// One PKI for every run: members m1..m6 on 127.0.0.11-16 (5 plus a spare to join).
fn make_pki(oxcert: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let pki = out.join("pki");
    if pki.join("m6.pem").is_file() {
        return Ok(pki);
    }
    let members: Vec<String> = (0..6)
        .map(|i| {
            format!(
                "{}={}",
                oxcd_chaos::cluster::member_name(i),
                oxcd_chaos::cluster::member_ip(i)
            )
        })
        .collect();
    let o = std::process::Command::new(oxcert)
        .args([
            "cluster",
            "--force",
            "--members",
            &members.join(","),
            "--out",
        ])
        .arg(&pki)
        .output()
        .context("run oxcert")?;
    if !o.status.success() {
        bail!(
            "oxcert cluster failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(pki)
}

/// Runs one spec in a fresh namespace; the namespace and everything in it is gone after.
fn one_run(spec: &Spec) -> anyhow::Result<Outcome> {
    // A failed run of an earlier invocation keeps its directory, members' data included:
    // this run starts from nothing, not from that run's keys.
    match std::fs::remove_dir_all(&spec.dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(anyhow::anyhow!("removing {}: {e}", spec.dir.display()))
        }
        _ => {}
    }
    std::fs::create_dir_all(&spec.dir)?;
    let spec_path = spec.dir.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(spec)?)?;
    let ns = Netns::create(&format!("oxchaos-{}-{}", std::process::id(), spec.index))?;
    let log = std::fs::File::create(spec.dir.join("oxchaos.log"))?;
    let me = std::env::current_exe()?;
    let mut child = ns
        .command(&me)
        .arg("inner")
        .arg(&spec_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start the run inside the namespace")?;
    // The run bounds itself; this is the backstop.
    let limit = Duration::from_millis(spec.duration_ms) + Duration::from_secs(300);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(ns);
    let result = std::fs::read(spec.dir.join("result.json"));
    match (status, result) {
        (_, Ok(b)) => Ok(serde_json::from_slice(&b)?),
        (Some(s), Err(_)) => Ok(Outcome {
            violations: vec![format!(
                "the run exited with {s} without a result; see {}",
                spec.dir.join("oxchaos.log").display()
            )],
            ..Default::default()
        }),
        (None, Err(_)) => Ok(Outcome {
            violations: vec![format!("the run did not finish within {limit:?}")],
            ..Default::default()
        }),
    }
}
