//! `lasso-bench`: runs scenarios (`loadtest/scenarios/*.yml`) against the mock provider itself, Lasso, nginx and
//! blutgang side by side on loopback with explicit CPU pinning, prints a table with ratios to the mock provider and to
//! nginx, and writes `loadtest/results/<timestamp>/{report.md,report.html,results.json}`.
//!
//!   cargo run -p loadtest --release --bin lasso-bench -- --scenario quick
//!   cargo run -p loadtest --release --bin lasso-bench -- --scenario all
//!   cargo run -p loadtest --release --bin lasso-bench -- --scenario soak   # Lasso RSS per connection
//!
//! `lasso-bench mock ...` runs a mock provider (the runner starts its mocks that way).

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};
use loadtest::bench::{self, BenchConfig, TargetKind};
use loadtest::{report, scenario, sys};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "lasso-bench",
    version,
    about = "Side-by-side load test of Lasso, nginx, blutgang and the mock provider"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// quick | all (every file but quick and soak) | soak | a scenario name in loadtest/scenarios | a path to a scenario
    /// file (comma-separated for several).
    #[arg(long, default_value = "quick")]
    scenario: String,
    /// Targets to run, in this order (blutgang/nginx are skipped with a note when not installed).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mock,lasso,floor,nginx,blutgang"
    )]
    targets: Vec<String>,
    /// Lasso binary (default: target/release/lasso of this workspace, built with cargo when missing).
    #[arg(long)]
    lasso_bin: Option<PathBuf>,
    /// Do not build Lasso when its binary is missing: print the command and fail.
    #[arg(long)]
    no_build: bool,
    /// nginx binary (default: nginx on PATH or /usr/sbin/nginx).
    #[arg(long)]
    nginx_bin: Option<PathBuf>,
    /// blutgang binary (default: loadtest/.tools/bin/blutgang, then PATH).
    #[arg(long)]
    blutgang_bin: Option<PathBuf>,
    /// Output directory (default: loadtest/results/<UTC timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// CPUs for the target under test (also those of `workers: all` scenarios when given; default: every CPU).
    #[arg(long, value_delimiter = ',')]
    target_cpus: Option<Vec<usize>>,
    /// CPUs for the upstream mock providers and the load generator.
    #[arg(long, value_delimiter = ',')]
    load_cpus: Option<Vec<usize>>,
    /// Multiply every step's duration and warm-up by this (e.g. 0.5).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Load generator threads (one event loop each, spread over --load-cpus; default: the step's, 1).
    #[arg(long)]
    load_threads: Option<usize>,
    /// Rounds per step and target (default: the scenario's `rounds`); the least disturbed round is reported.
    #[arg(long)]
    rounds: Option<usize>,
    /// No live progress line.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a mock provider (same options as lasso-mockprovider).
    Mock(Box<loadtest::mock::cli::MockArgs>),
    /// Run the floor forwarder (the `floor` target): forwards every request body to one upstream, no JSON handling.
    Floor {
        /// Upstream URL (http://IP:PORT/path).
        #[arg(long)]
        upstream: String,
        /// Event loops (one thread each).
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
    /// List the scenarios with their estimated run time.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Mock(args)) => match loadtest::mock::cli::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lasso-bench mock: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Cmd::Floor {
            upstream,
            workers,
            listen,
        }) => match loadtest::floor::Upstream::parse(&upstream)
            .and_then(|u| loadtest::floor::run(listen, u, workers))
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lasso-bench floor: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Cmd::List) => match scenario::resolve("all", &scenario::scenarios_dir()) {
            Ok(all) => {
                let quick =
                    scenario::resolve("quick", &scenario::scenarios_dir()).unwrap_or_default();
                let soak =
                    scenario::resolve("soak", &scenario::scenarios_dir()).unwrap_or_default();
                for s in quick.iter().chain(all.iter()).chain(soak.iter()) {
                    println!(
                        "{:<18} ~{:>4.0} s per target  {}",
                        s.name,
                        s.seconds_per_target(),
                        s.description
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("lasso-bench: {e}");
                ExitCode::FAILURE
            }
        },
        None => match run(cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lasso-bench: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn ensure_lasso(cli: &Cli) -> Result<PathBuf, String> {
    let root = bench::workspace_root();
    let bin = cli
        .lasso_bin
        .clone()
        .unwrap_or_else(|| root.join("target/release/lasso"));
    if bin.is_file() {
        return Ok(bin);
    }
    let cmd = format!(
        "cd {} && cargo build --release -p lasso --bin lasso",
        root.display()
    );
    if cli.no_build || cli.lasso_bin.is_some() {
        return Err(format!(
            "no Lasso binary at {}; build it with:\n  {cmd}",
            bin.display()
        ));
    }
    eprintln!(
        "lasso-bench: {} is missing; building it: {cmd}",
        bin.display()
    );
    let status = Command::new("cargo")
        .args(["build", "--release", "-p", "lasso", "--bin", "lasso"])
        .current_dir(&root)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}; build Lasso with:\n  {cmd}"))?;
    if !status.success() || !bin.is_file() {
        return Err(format!("building Lasso failed; try:\n  {cmd}"));
    }
    Ok(bin)
}

fn run(cli: Cli) -> Result<(), String> {
    let scenarios = scenario::resolve(&cli.scenario, &scenario::scenarios_dir())?;
    let targets: Vec<TargetKind> = cli
        .targets
        .iter()
        .map(|t| TargetKind::parse(t))
        .collect::<Result<_, _>>()?;
    let lasso_bin = if targets.contains(&TargetKind::Lasso) {
        ensure_lasso(&cli)?
    } else {
        PathBuf::from("lasso")
    };
    let nginx_bin = cli
        .nginx_bin
        .clone()
        .or_else(|| bench::which("nginx", &["/usr/sbin/nginx"]));
    let tools = bench::workspace_root().join("loadtest/.tools/bin/blutgang");
    let blutgang_bin = cli
        .blutgang_bin
        .clone()
        .or_else(|| tools.is_file().then_some(tools.clone()))
        .or_else(|| bench::which("blutgang", &[]));
    let ncpu = sys::available_cpus();
    let (tdef, ldef) = if ncpu >= 2 {
        (vec![0], vec![1])
    } else {
        (vec![0], vec![0])
    };
    let all_cpus: Vec<usize> = cli
        .target_cpus
        .clone()
        .unwrap_or_else(|| (0..ncpu).collect());
    let target_cpus = cli.target_cpus.clone().unwrap_or(tdef);
    let load_cpus = cli.load_cpus.clone().unwrap_or(ldef);
    if let Some(bad) = target_cpus
        .iter()
        .chain(load_cpus.iter())
        .find(|&&c| c >= ncpu)
    {
        return Err(format!("CPU {bad} does not exist here ({ncpu} CPUs)"));
    }
    if ncpu < 2 {
        eprintln!(
            "lasso-bench: warning: one CPU only: targets, mocks and the load generator share it"
        );
    }
    let out_dir = cli.out.clone().unwrap_or_else(bench::default_out_dir);
    let self_exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let n_targets = targets.len();
    let est: f64 = scenarios
        .iter()
        .map(|s| {
            let mut s = s.clone();
            if let Some(r) = cli.rounds {
                s.rounds = r;
                s.steps.iter_mut().for_each(|st| st.rounds = None);
            }
            // A scenario may name its own subset of targets (soak: lasso only).
            let n = s.targets.as_ref().map_or(n_targets, |only| {
                cli.targets.iter().filter(|t| only.contains(t)).count()
            });
            s.seconds_per_target() * cli.time_scale * n as f64 + 5.0
        })
        .sum();
    eprintln!(
        "lasso-bench: {} scenario(s) [{}], targets [{}], about {:.0} s; results in {}",
        scenarios.len(),
        scenarios
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        cli.targets.join(", "),
        est,
        out_dir.display()
    );
    let command_line = std::iter::once("lasso-bench".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let cfg = BenchConfig {
        scenarios,
        targets,
        lasso_bin,
        nginx_bin,
        blutgang_bin,
        self_exe,
        out_dir: out_dir.clone(),
        target_cpus,
        load_cpus,
        progress: !cli.no_progress,
        command_line,
        time_scale: cli.time_scale,
        rounds: cli.rounds,
        all_cpus,
        load_threads: cli.load_threads,
    };
    let rep = bench::run(&cfg)?;
    println!();
    print!("{}", report::preamble(&rep));
    println!();
    print!("{}", report::text_table(&rep));
    let soak = report::soak_text(&rep);
    if !soak.is_empty() {
        print!("\n{soak}");
    }
    let json = serde_json::to_string_pretty(&rep).map_err(|e| e.to_string())?;
    std::fs::write(out_dir.join("results.json"), json).map_err(|e| e.to_string())?;
    std::fs::write(out_dir.join("report.md"), report::markdown(&rep)).map_err(|e| e.to_string())?;
    std::fs::write(out_dir.join("report.html"), report::html(&rep)).map_err(|e| e.to_string())?;
    std::fs::write(
        out_dir.join("table.txt"),
        format!(
            "{}\n{}{}",
            report::preamble(&rep),
            report::text_table(&rep),
            if soak.is_empty() {
                String::new()
            } else {
                format!("\n{soak}")
            }
        ),
    )
    .map_err(|e| e.to_string())?;
    println!(
        "\nreport: {}/report.md, report.html, results.json ({:.0} s)",
        out_dir.display(),
        rep.total_wall_s
    );
    Ok(())
}
