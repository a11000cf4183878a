//! `vhost`: drive a virtual host by hand or run the demo (`make demo`).
use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
#[command(about = "layerd's virtual host: a booted ostree system in a directory")]
enum Cmd {
    /// The benchmarks of `make bench`.
    Bench {
        /// Scratch directory (removed again at the end).
        #[arg(long, default_value = ".demo")]
        dir: std::path::PathBuf,
        /// Only the layering benchmark.
        #[arg(long)]
        layering_only: bool,
        /// Only the metadata + solve benchmark.
        #[arg(long)]
        solve_only: bool,
        /// Only the container rebase benchmark.
        #[arg(long)]
        images_only: bool,
        /// Only status latency, start-up and idle memory.
        #[arg(long)]
        status_only: bool,
    },
    /// The guided demo of `make demo`.
    Demo {
        /// Scratch directory (removed again at the end).
        #[arg(long, default_value = ".demo")]
        dir: std::path::PathBuf,
    },
    /// Boot a virtual host and run a command inside it.
    Exec {
        /// Scratch directory.
        #[arg(long, default_value = ".demo")]
        dir: std::path::PathBuf,
        cmd: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cmd::parse() {
        Cmd::Bench { dir, layering_only, solve_only, images_only, status_only } => {
            std::fs::create_dir_all(&dir)?;
            if status_only {
                layerd_tests::bench::status(&dir)?;
            } else if images_only {
                layerd_tests::bench::images(&dir)?;
            } else if solve_only {
                layerd_tests::bench::solving(&dir)?;
            } else if layering_only {
                layerd_tests::bench::layering(&dir)?;
            } else {
                layerd_tests::bench::run(&dir)?;
            }
        }
        Cmd::Demo { dir } => {
            std::fs::create_dir_all(&dir)?;
            layerd_tests::demo::run(&dir)?;
        }
        Cmd::Exec { dir, cmd } => {
            std::fs::create_dir_all(&dir)?;
            let mut h = layerd_tests::VirtualHost::new(&dir, "exec")?;
            h.boot()?;
            let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            let out = h.exec(&args)?;
            print!("{}", String::from_utf8_lossy(&out.stdout));
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(())
}
