//! `imagegate dev`: compute and BFF in one process, on loopback, with real TCP between them —
//! what `make run` starts.

use crate::config::Config;

/// Starts compute on its own Tokio runtime (a background thread), then the BFF pointed at it
/// on this thread's actix runtime; both stop on Ctrl-C / SIGTERM.
pub fn run(mut config: Config) -> anyhow::Result<()> {
    let compute_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("imagegate-compute")
        .enable_all()
        .build()?;
    let compute_config = config.compute.clone();
    let (grpc, metrics) = compute_rt.block_on(async {
        let grpc = crate::compute::bind(compute_config.listen, "compute.listen").await?;
        let metrics =
            crate::compute::bind(compute_config.metrics_listen, "compute.metrics_listen").await?;
        anyhow::Ok((grpc, metrics))
    })?;
    let grpc_addr = grpc.local_addr()?;
    let metrics_addr = metrics.local_addr()?;
    let compute = compute_rt.spawn(crate::compute::ComputeServer::new(compute_config).serve(
        grpc,
        Some(metrics),
        crate::shutdown::signal(),
    ));
    config.compute_url = format!("http://{grpc_addr}");
    let listener = std::net::TcpListener::bind(config.bff.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (bff.listen): {e}", config.bff.listen))?;
    let http = listener.local_addr()?;
    println!(
        "imagegate dev: BFF on http://{http} (mode {:?}), compute gRPC on {grpc_addr}, compute metrics on http://{metrics_addr}/metrics",
        config.mode
    );
    println!("  try: curl -F file=@photo.jpg -F quality=80 -F format=webp http://{http}/v1/images/compress -o out.webp");
    println!("       curl http://{http}/health");
    actix_web::rt::System::new().block_on(async move {
        crate::edge::Bff::new(config)
            .await?
            .serve(listener, crate::shutdown::signal())
            .await
    })?;
    compute_rt.block_on(compute)??;
    Ok(())
}
