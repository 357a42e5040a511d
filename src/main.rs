//! The `imagegate` binary: parses the command line and config, sets up logging, and runs the
//! chosen part (compute, bff, dev, or a one-off image operation).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use imagegate::config::Config;

#[derive(Parser)]
#[command(
    name = "imagegate",
    version,
    about = "Image-upload gateway: Actix-web BFF + gRPC compute service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Common {
    /// TOML config file (or IMAGEGATE_CONFIG); defaults run everything on loopback.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC compute service.
    Compute {
        /// gRPC listen address [default: 127.0.0.1:50051]
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Metrics listen address [default: 127.0.0.1:9464]
        #[arg(long)]
        metrics_listen: Option<std::net::SocketAddr>,
        #[command(flatten)]
        common: Common,
    },
    /// Run the HTTP BFF (compute address from GRPC_COMPUTE_URL or the config).
    Bff {
        /// HTTP listen address [default: 127.0.0.1:8080]
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        #[command(flatten)]
        common: Common,
    },
    /// Run compute and BFF together on loopback (what `make run` starts).
    Dev {
        #[command(flatten)]
        common: Common,
    },
    /// Run one image operation on a file, outside any server.
    Op(imagegate::compute::ops::cli::OpArgs),
}

/// Loads the config, then starts logging in the format it names (so the config's own errors
/// go to stderr as plain text) and reports the environment variables it ignored.
fn load(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let config = Config::load(path)?;
    imagegate::logging::init(config.log.format);
    imagegate::logging::warn_ignored_env(&imagegate::config::ignored_env_vars());
    Ok(config)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Compute {
            listen,
            metrics_listen,
            common,
        } => {
            let mut config = load(common.config.as_deref())?;
            if let Some(a) = listen {
                config.compute.listen = a;
            }
            if let Some(a) = metrics_listen {
                config.compute.metrics_listen = a;
            }
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(imagegate::compute::run(config.compute))
        }
        Command::Bff { listen, common } => {
            let mut config = load(common.config.as_deref())?;
            if let Some(a) = listen {
                config.bff.listen = a;
            }
            let file = common
                .config
                .or_else(|| std::env::var_os("IMAGEGATE_CONFIG").map(Into::into));
            actix_web::rt::System::new().block_on(imagegate::edge::run(config, file))
        }
        Command::Dev { common } => imagegate::dev::run(load(common.config.as_deref())?),
        Command::Op(args) => {
            imagegate::logging::init(imagegate::config::LogFormat::Text);
            imagegate::compute::ops::cli::run(args)
        }
    }
}
