//! End to end: the real compute server and the real BFF on ephemeral ports, over real TCP,
//! called as a web client would (multipart in, image or SSE or problem+json out).

use std::time::Duration;

use crate::support::*;
use reqwest::multipart::Form;
use reqwest::StatusCode;
use serde_json::Value;

fn decode(bytes: &[u8]) -> image::DynamicImage {
    image::load_from_memory(bytes).unwrap()
}

#[tokio::test]
async fn every_image_endpoint_returns_a_real_image() {
    let compute = start_compute(compute_config(), None);
    let bff = start_bff(bff_config(&compute.url()));

    // compress: default WebP
    let r = post(
        bff.url("/v1/images/compress"),
        Form::new()
            .part("file", file(jpeg(640, 480)))
            .text("quality", "70"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/webp");
    let original: usize = r.headers()["x-original-size"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let output: usize = r.headers()["x-output-size"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(r.headers().contains_key("x-compression-ratio"));
    assert!(r.headers().contains_key("x-elapsed-ms"));
    let body = r.bytes().await.unwrap();
    assert_eq!(output, body.len());
    assert_eq!(original, jpeg(640, 480).len());
    let img = decode(&body);
    assert_eq!((img.width(), img.height()), (640, 480));

    // compress to JPEG
    let r = post(
        bff.url("/v1/images/compress"),
        Form::new()
            .part("file", file(png(100, 80)))
            .text("format", "jpeg"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(decode(&r.bytes().await.unwrap()).width(), 100);

    // resize: keeps the input's format by default
    let r = post(
        bff.url("/v1/images/resize"),
        Form::new()
            .part("file", file(jpeg(640, 480)))
            .text("width", "320")
            .text("height", "320"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(r.headers()["x-image-width"], "320");
    assert_eq!(r.headers()["x-image-height"], "240");
    let img = decode(&r.bytes().await.unwrap());
    assert_eq!((img.width(), img.height()), (320, 240));

    // resize exact, to PNG
    let r = post(
        bff.url("/v1/images/resize"),
        Form::new()
            .part("file", file(jpeg(640, 480)))
            .text("width", "50")
            .text("height", "70")
            .text("keep_aspect_ratio", "false")
            .text("format", "png"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    let img = decode(&r.bytes().await.unwrap());
    assert_eq!((img.width(), img.height()), (50, 70));

    // watermark: text
    let r = post(
        bff.url("/v1/images/watermark"),
        Form::new()
            .part("file", file(png(300, 200)))
            .text("text", "© imagegate")
            .text("position", "top-left")
            .text("opacity", "0.9"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    let marked = decode(&r.bytes().await.unwrap()).to_rgb8();
    let plain = decode(&png(300, 200)).to_rgb8();
    assert_eq!(marked.dimensions(), (300, 200));
    assert_ne!(
        marked.as_raw(),
        plain.as_raw(),
        "the watermark changed nothing"
    );

    // watermark: overlay logo
    let r = post(
        bff.url("/v1/images/watermark"),
        Form::new()
            .part("file", file(jpeg(300, 200)))
            .part("overlay", file(png(40, 20)))
            .text("format", "webp"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/webp");
    assert_eq!(decode(&r.bytes().await.unwrap()).width(), 300);
}

#[tokio::test]
async fn batch_streams_progress_per_image_then_done() {
    let compute = start_compute(compute_config(), None);
    let bff = start_bff(bff_config(&compute.url()));
    let form = Form::new()
        .text("operation", "resize")
        .text("width", "64")
        .part("file", file(jpeg(320, 240)))
        .part("file", file(b"this is not an image at all".to_vec()))
        .part("file", file(png(200, 100)));
    let r = post(bff.url("/v1/images/batch"), form).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = sse_events(&r.text().await.unwrap());
    assert_eq!(events.len(), 4, "{events:?}");
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "done");
    assert_eq!(
        done,
        &serde_json::json!({"total": 3, "succeeded": 2, "failed": 1})
    );
    let mut seen = Vec::new();
    for (name, data) in &events[..3] {
        assert_eq!(name, "progress");
        let index = data["index"].as_u64().unwrap();
        seen.push(index);
        if index == 1 {
            assert_eq!(data["success"], false);
            assert!(
                data["error"]
                    .as_str()
                    .unwrap()
                    .contains("UNSUPPORTED_FORMAT"),
                "{data}"
            );
        } else {
            assert_eq!(data["success"], true, "{data}");
            assert!(data["output_size"].as_u64().unwrap() > 0);
            assert!(data["original_size"].as_u64().unwrap() > 0);
            assert!(data["elapsed_ms"].is_u64());
        }
    }
    seen.sort();
    assert_eq!(seen, vec![0, 1, 2]);
}

#[tokio::test]
async fn a_batch_above_the_message_limit_is_split_into_several_calls() {
    let log = CallLog::default();
    let compute = start_compute(compute_config(), Some(log.hook()));
    let mut config = bff_config(&compute.url());
    config.lanes.heavy.max_message_size = imagegate::config::Size::kib(180);
    let bff = start_bff(config);
    let image = jpeg(400, 300); // ~40 KB each: two per call
    assert!(image.len() > 30_000, "{}", image.len());
    let mut form = Form::new()
        .text("operation", "compress")
        .text("format", "jpeg");
    for _ in 0..5 {
        form = form.part("file", file(image.clone()));
    }
    let r = post(bff.url("/v1/images/batch"), form).await;
    assert_eq!(r.status(), 200);
    let events = sse_events(&r.text().await.unwrap());
    assert_eq!(
        events.last().unwrap().1,
        serde_json::json!({"total": 5, "succeeded": 5, "failed": 0})
    );
    let mut indexes: Vec<u64> = events[..5]
        .iter()
        .map(|(_, d)| d["index"].as_u64().unwrap())
        .collect();
    indexes.sort();
    assert_eq!(indexes, vec![0, 1, 2, 3, 4]);
    assert!(
        log.count("BatchProcess") >= 2,
        "{} calls",
        log.count("BatchProcess")
    );
}

#[tokio::test]
async fn an_answer_above_the_lanes_message_limit_is_502_not_the_clients_413() {
    let compute = start_compute(compute_config(), None);
    let mut config = bff_config(&compute.url());
    config.lanes.heavy.max_message_size = imagegate::config::Size::kib(96);
    let bff = start_bff(config);
    // A small JPEG asked for as PNG: the request fits, the lossless answer does not.
    let input = jpeg(400, 300);
    assert!(input.len() < 90 * 1024, "{} bytes", input.len());
    let form = Form::new().part("file", file(input)).text("format", "png");
    let body = problem(
        post(bff.url("/v1/images/compress"), form).await,
        StatusCode::BAD_GATEWAY,
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("max_message_size"),
        "{body}"
    );
}

#[tokio::test]
async fn every_error_row_of_the_contract_is_problem_json() {
    let compute = start_compute(compute_config(), None);
    let mut config = bff_config(&compute.url());
    config.bff.max_file_size = imagegate::config::Size::kib(256);
    config.bff.max_request_size = imagegate::config::Size::kib(512);
    let bff = start_bff(config);
    let url = bff.url("/v1/images/compress");

    // 400: missing file, bad parameter, malformed multipart
    let b = problem(
        post(url.clone(), Form::new().text("quality", "80")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(b["detail"].as_str().unwrap().contains("file"), "{b}");
    let b = problem(
        post(
            url.clone(),
            Form::new()
                .part("file", file(jpeg(32, 32)))
                .text("quality", "0"),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(b["detail"].as_str().unwrap().contains("quality"), "{b}");
    problem(
        post(
            url.clone(),
            Form::new()
                .part("file", file(jpeg(32, 32)))
                .text("quality", "high"),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    problem(
        post(
            url.clone(),
            Form::new()
                .part("file", file(jpeg(32, 32)))
                .text("format", "bmp"),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    // A field the endpoint does not know is ignored (Uppy adds `name`, `type`,
    // `relativePath`), but a known one with a bad value stays 400, whatever comes with it.
    let r = post(
        url.clone(),
        Form::new()
            .text("name", "photo.jpg")
            .text("type", "image/jpeg")
            .text("relativePath", "null")
            .part("file", file(jpeg(32, 32)))
            .text("colour", "red"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/webp");
    problem(
        post(
            url.clone(),
            Form::new()
                .text("name", "photo.jpg")
                .part("file", file(jpeg(32, 32)))
                .text("quality", "500"),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let r = reqwest::Client::new()
        .post(url.clone())
        .header("content-type", "multipart/form-data")
        .body("no boundary here")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::BAD_REQUEST).await;
    let r = reqwest::Client::new()
        .post(url.clone())
        .header("content-type", "multipart/form-data; boundary=XYZ")
        .body("--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n\u{ff}\u{d8}trunc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let b = problem(
        post(
            bff.url("/v1/images/resize"),
            Form::new()
                .part("file", file(jpeg(32, 32)))
                .text("width", "-5"),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(b["detail"].as_str().unwrap().contains("width"), "{b}");
    // Range checked by compute, answered 400 with its message.
    let b = problem(
        post(
            bff.url("/v1/images/resize"),
            Form::new()
                .part("file", file(jpeg(32, 32)))
                .text("width", "20000"),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(b["detail"].as_str().unwrap().contains("16384"), "{b}");

    // 413: a file above its limit, and a request above its limit
    let mut oversized = jpeg(8, 8);
    oversized.resize(300 * 1024, 0);
    let b = problem(
        post(url.clone(), Form::new().part("file", file(oversized))).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert!(b["detail"].as_str().unwrap().contains("limit"), "{b}");
    let big = Form::new()
        .text("operation", "compress")
        .part("file", file(jpeg(8, 8)))
        .part("file", file(vec![0u8; 200 * 1024]))
        .part("file", file(vec![0u8; 200 * 1024]))
        .part("file", file(vec![0u8; 200 * 1024]));
    problem(
        post(bff.url("/v1/images/batch"), big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;

    // 415: not an image, whatever the client says
    let b = problem(
        post(
            url.clone(),
            Form::new().part("file", file(b"GIF? no. %PDF-1.7 ...........".to_vec())),
        )
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains("not a supported image type"),
        "{b}"
    );

    // 422: undecodable, and a pixel bomb
    let mut truncated = png(64, 64);
    truncated.truncate(truncated.len() / 2);
    problem(
        post(url.clone(), Form::new().part("file", file(truncated))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let b = problem(
        post(url.clone(), Form::new().part("file", file(png_bomb()))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(b["detail"].as_str().unwrap().contains("limit"), "{b}");

    // 404 and 405 are problems too
    problem(
        reqwest::get(bff.url("/nope")).await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        reqwest::get(url.clone()).await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;

    // Nothing leaked: no call holds a permit.
    let text = metrics_text(&bff).await;
    assert_eq!(
        metric(&text, "imagegate_lane_in_flight{lane=\"heavy\"}"),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_deadline_passing_is_504() {
    let log = CallLog::default();
    let compute = start_compute(compute_config(), Some(log.hook()));
    let mut config = bff_config(&compute.url());
    config.lanes.heavy.deadline = Duration::from_millis(300);
    let bff = start_bff(config);
    log.hold("Compress");
    let r = post(
        bff.url("/v1/images/compress"),
        Form::new().part("file", file(jpeg(32, 32))),
    )
    .await;
    let b = problem(r, StatusCode::GATEWAY_TIMEOUT).await;
    assert!(b["detail"].as_str().unwrap().contains("deadline"), "{b}");
    log.release("Compress");
    let text = metrics_text(&bff).await;
    assert_eq!(
        metric(
            &text,
            "imagegate_lane_rejected_total{lane=\"heavy\",reason=\"deadline\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "imagegate_lane_requests_total{code=\"DEADLINE_EXCEEDED\",lane=\"heavy\",method=\"compute.ImageService/Compress\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "imagegate_lane_in_flight{lane=\"heavy\"}"),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_compute_that_fails_is_502() {
    // A real gRPC server that does not implement ImageService: UNIMPLEMENTED → 502.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let bff = start_bff(bff_config(&format!("http://{addr}")));
    let r = post(
        bff.url("/v1/images/compress"),
        Form::new().part("file", file(jpeg(16, 16))),
    )
    .await;
    problem(r, StatusCode::BAD_GATEWAY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cut_off_by_compute_dying_is_503_and_unavailable_in_the_lane_metrics() {
    let log = CallLog::default();
    log.hold("Compress");
    let compute = start_compute(compute_config(), Some(log.hook()));
    let bff = start_bff(bff_config(&compute.url()));
    let url = bff.url("/v1/images/compress");
    let call = tokio::spawn(post(url, Form::new().part("file", file(jpeg(16, 16)))));
    assert!(
        eventually(Duration::from_secs(30), async || log.count("Compress") == 1).await,
        "the call never reached compute"
    );
    // The call is inside compute, held: kill compute under it.
    compute.kill();
    let r = call.await.unwrap();
    assert!(r.headers().contains_key("retry-after"));
    let b = problem(r, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(
        b["type"], "urn:imagegate:problem:compute-unavailable",
        "{b}"
    );
    let text = metrics_text(&bff).await;
    let calls = |code: &str| {
        metric(
            &text,
            &format!(
                "imagegate_lane_requests_total{{code=\"{code}\",lane=\"heavy\",method=\"compute.ImageService/Compress\"}}"
            ),
        )
    };
    assert_eq!(calls("UNAVAILABLE"), Some(1.0), "{text}");
    assert_eq!(calls("UNKNOWN"), None, "{text}");
}

#[tokio::test]
async fn lanes_use_separate_tcp_connections_and_shared_mode_uses_one() {
    let log = CallLog::default();
    let compute = start_compute(compute_config(), Some(log.hook()));
    let mut config = bff_config(&compute.url());
    config.lanes.heavy.connections = 3;
    let bff = start_bff(config);
    for _ in 0..6 {
        let r = post(
            bff.url("/v1/images/compress"),
            Form::new().part("file", file(jpeg(16, 16))),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            reqwest::get(bff.url("/health")).await.unwrap().status(),
            200
        );
    }
    let heavy = log.peers("Compress");
    let realtime = log.peers("Check");
    assert_eq!(heavy.len(), 3, "heavy peers {heavy:?}");
    assert_eq!(realtime.len(), 1, "realtime peers {realtime:?}");
    assert!(
        heavy.is_disjoint(&realtime),
        "a realtime call shared a heavy connection"
    );
    let text = metrics_text(&bff).await;
    assert_eq!(
        metric(&text, "imagegate_lane_connections{lane=\"heavy\"}"),
        Some(3.0)
    );
    assert_eq!(
        metric(&text, "imagegate_lane_connections{lane=\"realtime\"}"),
        Some(1.0)
    );
    assert!(
        metric(&text, "imagegate_lane_bytes_sent_total{lane=\"heavy\"}").unwrap() > 6.0 * 100.0
    );
    assert!(
        metric(
            &text,
            "imagegate_lane_bytes_received_total{lane=\"realtime\"}"
        )
        .unwrap()
            > 0.0
    );
    drop(bff);

    // The seed's design: one connection for everything.
    let shared_log = CallLog::default();
    let compute2 = start_compute(compute_config(), Some(shared_log.hook()));
    let mut config = bff_config(&compute2.url());
    config.mode = imagegate::config::Mode::Shared;
    config.lanes.heavy.connections = 3;
    let bff = start_bff(config);
    for _ in 0..4 {
        assert_eq!(
            post(
                bff.url("/v1/images/compress"),
                Form::new().part("file", file(jpeg(16, 16)))
            )
            .await
            .status(),
            200
        );
        assert_eq!(
            reqwest::get(bff.url("/health")).await.unwrap().status(),
            200
        );
    }
    let all: std::collections::BTreeSet<_> = shared_log
        .peers("Compress")
        .union(&shared_log.peers("Check"))
        .copied()
        .collect();
    assert_eq!(all.len(), 1, "shared mode used {all:?}");
    let text = metrics_text(&bff).await;
    assert_eq!(
        metric(&text, "imagegate_lane_connections{lane=\"shared\"}"),
        Some(1.0)
    );
    assert!(metric(&text, "imagegate_lane_in_flight{lane=\"shared\"}").is_some());
}

#[tokio::test]
async fn a_saturated_lane_refuses_an_upload_before_parsing_it_and_keeps_the_connection() {
    let log = CallLog::default();
    let compute = start_compute(compute_config(), Some(log.hook()));
    let mut config = bff_config(&compute.url());
    config.lanes.heavy.max_in_flight = 1;
    config.lanes.heavy.queue_wait = Duration::ZERO;
    config.bff.max_request_size = imagegate::config::Size::kib(256);
    config.bff.max_file_size = imagegate::config::Size::kib(200);
    let bff = start_bff(config);
    let slow = fill_the_heavy_lane(&bff, &log).await;

    // Not multipart at all: read in full, this would be a 400. The lane is full, so it is
    // refused before it is parsed, with the same 503 as a shed at admission.
    let client = reqwest::Client::new();
    let r = client
        .post(bff.url("/v1/images/compress"))
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(vec![b'a'; 100 * 1024])
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
    // Its body was drained, so the connection stays open for the next request.
    assert_eq!(r.headers().get("connection"), None, "{:?}", r.headers());
    let b = problem(r, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(b["detail"].as_str().unwrap().contains("heavy"), "{b}");
    let text = metrics_text(&bff).await;
    assert_eq!(
        metric(
            &text,
            "imagegate_lane_rejected_total{lane=\"heavy\",reason=\"saturated\"}"
        ),
        Some(1.0)
    );

    // A body declared above the request limit still gets its 413 at once, not a drained 503.
    let r = client
        .post(bff.url("/v1/images/compress"))
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(vec![b'a'; 300 * 1024])
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::PAYLOAD_TOO_LARGE).await;

    // Once the lane has room, the same client's next upload is read and served.
    log.release("Compress");
    assert_eq!(slow.await.unwrap(), 200);
    let form = Form::new().part("file", file(jpeg(64, 64)));
    let r = client
        .post(bff.url("/v1/images/compress"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        eventually_metric(
            &bff,
            "imagegate_http_buffered_body_bytes",
            0.0,
            Duration::from_secs(10)
        )
        .await
    );
}

#[tokio::test]
async fn a_saturated_heavy_lane_sheds_while_health_stays_up() {
    let log = CallLog::default();
    let compute = start_compute(compute_config(), Some(log.hook()));
    let mut config = bff_config(&compute.url());
    config.lanes.heavy.max_in_flight = 1;
    config.lanes.heavy.queue_wait = Duration::from_millis(50);
    let bff = start_bff(config);
    let slow = fill_the_heavy_lane(&bff, &log).await;

    let r = post(
        bff.url("/v1/images/compress"),
        Form::new().part("file", file(jpeg(64, 64))),
    )
    .await;
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let b = problem(r, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(b["detail"].as_str().unwrap().contains("heavy"), "{b}");

    let health = reqwest::get(bff.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["info"]["grpc-compute"]["status"], "up");

    let text = metrics_text(&bff).await;
    assert_eq!(
        metric(
            &text,
            "imagegate_lane_rejected_total{lane=\"heavy\",reason=\"saturated\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "imagegate_lane_rejected_total{lane=\"realtime\",reason=\"saturated\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "imagegate_lane_limit{lane=\"heavy\"}"),
        Some(1.0)
    );

    log.release("Compress");
    assert_eq!(slow.await.unwrap(), 200);
    let text = metrics_text(&bff).await;
    assert_eq!(
        metric(&text, "imagegate_lane_in_flight{lane=\"heavy\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "imagegate_lane_in_flight{lane=\"realtime\"}"),
        Some(0.0)
    );
}

#[tokio::test]
async fn compute_down_then_back_is_survived_without_restarting_the_bff() {
    // Find a free port, then leave it closed: compute is "down".
    let reserved = unused_addr();
    let addr = reserved.addr;
    let mut config = bff_config(&format!("http://{addr}"));
    config.lanes.heavy.retry_backoff = Duration::from_millis(5);
    let bff = start_bff(config);

    let health = reqwest::get(bff.url("/health")).await.unwrap();
    assert_eq!(health.status(), 503);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "error");
    assert_eq!(body["error"]["grpc-compute"]["status"], "down");
    assert_eq!(
        reqwest::get(bff.url("/health/ready"))
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        reqwest::get(bff.url("/health/live"))
            .await
            .unwrap()
            .status(),
        200
    );
    let r = post(
        bff.url("/v1/images/compress"),
        Form::new().part("file", file(jpeg(16, 16))),
    )
    .await;
    assert!(r.status() == 503 || r.status() == 502, "{}", r.status());
    problem(r, StatusCode::SERVICE_UNAVAILABLE).await;

    let compute = start_compute_at(addr, compute_config(), None);
    assert!(
        eventually(Duration::from_secs(30), async || reqwest::get(
            bff.url("/health")
        )
        .await
        .unwrap()
        .status()
            == 200)
        .await,
        "the BFF never saw compute come back"
    );
    let r = post(
        bff.url("/v1/images/compress"),
        Form::new().part("file", file(jpeg(16, 16))),
    )
    .await;
    assert_eq!(r.status(), 200);

    // And down again: answers, never hangs.
    compute.stop();
    assert!(
        eventually(Duration::from_secs(30), async || reqwest::get(
            bff.url("/health")
        )
        .await
        .unwrap()
        .status()
            == 503)
        .await,
        "health stayed up with compute stopped"
    );
    let text = metrics_text(&bff).await;
    assert_eq!(
        metric(&text, "imagegate_lane_in_flight{lane=\"heavy\"}"),
        Some(0.0)
    );
}

#[tokio::test]
async fn metrics_expose_every_lane_family_and_http_metrics() {
    let compute = start_compute(compute_config(), None);
    let bff = start_bff(bff_config(&compute.url()));
    let r = post(
        bff.url("/v1/images/compress"),
        Form::new().part("file", file(jpeg(16, 16))),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = reqwest::get(bff.url("/metrics")).await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    for family in [
        "imagegate_lane_requests_total",
        "imagegate_lane_request_duration_seconds_bucket",
        "imagegate_lane_in_flight",
        "imagegate_lane_queue_wait_seconds_bucket",
        "imagegate_lane_rejected_total",
        "imagegate_lane_limit",
        "imagegate_lane_connections",
        "imagegate_lane_bytes_sent_total",
        "imagegate_lane_bytes_received_total",
        "imagegate_http_requests_total",
        "imagegate_http_request_duration_seconds_bucket",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(family), "missing {family}");
    }
    assert_eq!(
        metric(&text, "imagegate_lane_requests_total{code=\"OK\",lane=\"heavy\",method=\"compute.ImageService/Compress\"}"),
        Some(1.0)
    );
    // The heavy lane is adaptive: it starts at INITIAL_LIMIT (8) and one call moves nothing.
    assert_eq!(
        metric(&text, "imagegate_lane_limit{lane=\"heavy\"}"),
        Some(imagegate::dispatch::adaptive::INITIAL_LIMIT as f64)
    );
    // What the controller saw: one answered call, one wait sample.
    assert_eq!(
        metric(
            &text,
            "imagegate_lane_compute_wait_seconds_count{lane=\"heavy\"}"
        ),
        Some(1.0)
    );
    assert!(metric(&text, "imagegate_lane_compute_busy{lane=\"heavy\"}").is_some());
    assert_eq!(
        metric(&text, "imagegate_lane_limit{lane=\"realtime\"}"),
        Some(256.0)
    );
    assert_eq!(
        metric(&text, "imagegate_http_requests_total{method=\"POST\",route=\"/v1/images/compress\",status=\"200\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_reload_under_load_changes_limits_without_failing_calls_in_flight() {
    let log = CallLog::default();
    let compute = start_compute(compute_config(), Some(log.hook()));
    let dir = scratch_dir("reload");
    let config_path = dir.join("imagegate.toml");
    let write = |max: usize| {
        std::fs::write(
            &config_path,
            format!("compute_url = \"{}\"\n[lanes.heavy]\nmax_in_flight = {max}\nqueue_wait = \"20ms\"\n", compute.url()),
        )
        .unwrap()
    };
    write(4);
    let mut config = imagegate::config::Config::load(Some(&config_path)).unwrap();
    config.bff.workers = 2;
    config.store.dir = scratch_dir("store").to_string_lossy().into_owned();
    let bff = start_bff_with_file(config, Some(config_path.clone()));
    log.hold("Compress");

    // Three calls in flight under the old limit of 4.
    let mut in_flight = Vec::new();
    for _ in 0..3 {
        let url = bff.url("/v1/images/compress");
        in_flight.push(tokio::spawn(async move {
            post(url, Form::new().part("file", file(jpeg(32, 32))))
                .await
                .status()
        }));
    }
    assert!(
        eventually_metric(
            &bff,
            "imagegate_lane_in_flight{lane=\"heavy\"}",
            3.0,
            Duration::from_secs(20)
        )
        .await
    );

    // Lower the limit to 1 while they run.
    write(1);
    let r = reqwest::Client::new()
        .post(bff.url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let outcome: Value = r.json().await.unwrap();
    assert!(
        outcome["applied"]
            .to_string()
            .contains("lanes.heavy.max_in_flight"),
        "{outcome}"
    );
    let text = metrics_text(&bff).await;
    assert_eq!(
        metric(&text, "imagegate_lane_limit{lane=\"heavy\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "imagegate_config_reloads_total{result=\"ok\"}"),
        Some(1.0)
    );

    // New requests see the new limit at once.
    let r = post(
        bff.url("/v1/images/compress"),
        Form::new().part("file", file(jpeg(32, 32))),
    )
    .await;
    problem(r, StatusCode::SERVICE_UNAVAILABLE).await;

    // An invalid config is refused and the old one stays.
    std::fs::write(&config_path, "[lanes.heavy]\nmax_in_flight = 0\n").unwrap();
    let r = reqwest::Client::new()
        .post(bff.url("/admin/reload"))
        .send()
        .await
        .unwrap();
    let b = problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains("lanes.heavy.max_in_flight"),
        "{b}"
    );
    let text = metrics_text(&bff).await;
    assert_eq!(
        metric(&text, "imagegate_lane_limit{lane=\"heavy\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "imagegate_config_reloads_total{result=\"error\"}"),
        Some(1.0)
    );

    // The calls admitted under the old limit all finish well.
    log.release("Compress");
    for call in in_flight {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(
        metric(
            &metrics_text(&bff).await,
            "imagegate_lane_in_flight{lane=\"heavy\"}"
        ),
        Some(0.0)
    );
    // …and then the new limit admits one at a time.
    let r = post(
        bff.url("/v1/images/compress"),
        Form::new().part("file", file(jpeg(32, 32))),
    )
    .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_open_circuit_fails_fast_then_recovers() {
    let reserved = unused_addr();
    let addr = reserved.addr;
    let mut config = bff_config(&format!("http://{addr}"));
    config.lanes.heavy.retries = 0;
    config.lanes.heavy.circuit_failures = 2;
    config.lanes.heavy.circuit_open_for = Duration::from_millis(300);
    let bff = start_bff(config);
    for _ in 0..2 {
        let r = post(
            bff.url("/v1/images/compress"),
            Form::new().part("file", file(jpeg(16, 16))),
        )
        .await;
        assert_eq!(r.status(), 503);
    }
    let r = post(
        bff.url("/v1/images/compress"),
        Form::new().part("file", file(jpeg(16, 16))),
    )
    .await;
    assert!(r.headers().contains_key("retry-after"));
    let b = problem(r, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(b["type"], "urn:imagegate:problem:circuit-open", "{b}");
    let text = metrics_text(&bff).await;
    assert_eq!(
        metric(
            &text,
            "imagegate_lane_rejected_total{lane=\"heavy\",reason=\"circuit_open\"}"
        ),
        Some(1.0)
    );

    let _compute = start_compute_at(addr, compute_config(), None);
    assert!(
        eventually(Duration::from_secs(30), async || {
            post(
                bff.url("/v1/images/compress"),
                Form::new().part("file", file(jpeg(16, 16))),
            )
            .await
            .status()
                == 200
        })
        .await,
        "the circuit never closed after compute came back"
    );
    assert_eq!(
        metric(
            &metrics_text(&bff).await,
            "imagegate_lane_in_flight{lane=\"heavy\"}"
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_serving_health_check_reopens_the_heavy_lane_without_waiting_out_the_circuit() {
    let reserved = unused_addr();
    let addr = reserved.addr;
    let mut config = bff_config(&format!("http://{addr}"));
    config.lanes.heavy.retries = 0;
    config.lanes.heavy.circuit_failures = 2;
    // Far longer than the test: only the health check can end it early.
    config.lanes.heavy.circuit_open_for = Duration::from_secs(3600);
    let bff = start_bff(config);
    let compress = async || {
        post(
            bff.url("/v1/images/compress"),
            Form::new().part("file", file(jpeg(16, 16))),
        )
        .await
    };
    for _ in 0..2 {
        assert_eq!(compress().await.status(), 503);
    }
    let b = problem(compress().await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(b["type"], "urn:imagegate:problem:circuit-open", "{b}");

    let _compute = start_compute_at(addr, compute_config(), None);
    // Still open: nothing has told the heavy lane that compute is back.
    let b = problem(compress().await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(b["type"], "urn:imagegate:problem:circuit-open", "{b}");
    assert!(
        eventually(Duration::from_secs(30), async || reqwest::get(
            bff.url("/health")
        )
        .await
        .unwrap()
        .status()
            == 200)
        .await,
        "the BFF never saw compute come back"
    );
    // /health found compute serving on the realtime lane: the heavy lane's next call probes.
    assert_eq!(compress().await.status(), 200);
    assert_eq!(
        compress().await.status(),
        200,
        "the probe closed the circuit"
    );
}

#[tokio::test]
async fn an_adaptive_heavy_lane_lowers_its_limit_when_compute_answers_queue_full() {
    // One CPU worker and one queue place: of eight calls released at once, six are refused.
    let log = CallLog::default();
    let mut compute_cfg = compute_config();
    compute_cfg.workers = 1;
    compute_cfg.queue_capacity = 1;
    let compute = start_compute(compute_cfg, Some(log.hook()));
    let config = bff_config(&compute.url());
    assert_eq!(
        config.lanes.heavy.concurrency,
        imagegate::config::Concurrency::Adaptive
    );
    let bff = start_bff(config);
    let start = metric(
        &metrics_text(&bff).await,
        "imagegate_lane_limit{lane=\"heavy\"}",
    )
    .expect("a heavy limit");
    assert_eq!(start, imagegate::dispatch::adaptive::INITIAL_LIMIT as f64);
    // The controller decides on windows of at least 250 ms from the lane's start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    log.hold("Compress");
    let mut calls = Vec::new();
    for _ in 0..8 {
        let url = bff.url("/v1/images/compress");
        calls.push(tokio::spawn(async move {
            post(url, Form::new().part("file", file(jpeg(256, 256))))
                .await
                .status()
        }));
    }
    assert!(
        eventually_metric(
            &bff,
            "imagegate_lane_in_flight{lane=\"heavy\"}",
            8.0,
            Duration::from_secs(20)
        )
        .await,
        "eight calls never got in flight"
    );
    log.release("Compress");
    let mut refused = 0;
    for call in calls {
        let status = call.await.unwrap();
        assert!(status == 200 || status == 503, "{status}");
        refused += usize::from(status == 503);
    }
    assert!(refused >= 3, "only {refused} calls were refused by compute");
    let text = metrics_text(&bff).await;
    let limit = metric(&text, "imagegate_lane_limit{lane=\"heavy\"}").unwrap();
    assert!(
        limit < start,
        "QUEUE_FULL answers left the limit at {limit} (started at {start})"
    );
    assert_eq!(
        metric(&text, "imagegate_lane_in_flight{lane=\"heavy\"}"),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_hung_health_check_is_judged_by_the_lane_not_dropped_unseen() {
    // Compute accepts the call and never answers (as a frozen process would). The BFF's
    // health timeout is shorter than the realtime lane's deadline: the lane must still see the
    // call end, as DEADLINE_EXCEEDED, so it reaches the metrics, the circuit and the balancer.
    let log = CallLog::default();
    let compute = start_compute(compute_config(), Some(log.hook()));
    let mut config = bff_config(&compute.url());
    config.bff.health_timeout = Duration::from_millis(300);
    assert!(config.lanes.realtime.deadline > config.bff.health_timeout);
    let bff = start_bff(config);
    log.hold("Check");
    let started = std::time::Instant::now();
    let health = reqwest::get(bff.url("/health")).await.unwrap();
    assert_eq!(health.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "/health took {:?}",
        started.elapsed()
    );
    let text = metrics_text(&bff).await;
    assert_eq!(
        metric(
            &text,
            "imagegate_lane_requests_total{code=\"DEADLINE_EXCEEDED\",lane=\"realtime\",method=\"compute.HealthService/Check\"}"
        ),
        Some(1.0),
        "the hung health check is not in the realtime lane's metrics"
    );
    assert_eq!(
        metric(
            &text,
            "imagegate_lane_rejected_total{lane=\"realtime\",reason=\"deadline\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "imagegate_lane_in_flight{lane=\"realtime\"}"),
        Some(0.0)
    );
    log.release("Check");
}

#[tokio::test]
async fn a_call_dropped_before_its_end_is_recorded_as_cancelled() {
    // The dispatcher against a real compute over TCP; the caller (an HTTP handler whose
    // client went away, a shutdown) drops the call while compute holds it.
    let log = CallLog::default();
    let compute = start_compute(compute_config(), Some(log.hook()));
    let config = bff_config(&compute.url());
    let registry = prometheus::Registry::new();
    let dispatcher = std::sync::Arc::new(
        imagegate::dispatch::Dispatcher::new(&config, &registry)
            .await
            .unwrap(),
    );
    log.hold("Compress");
    let call = {
        let d = dispatcher.clone();
        tokio::spawn(async move {
            d.compress(imagegate::proto::CompressRequest {
                image_data: jpeg(32, 32).into(),
                ..Default::default()
            })
            .await
        })
    };
    let heavy = dispatcher.lane_for(imagegate::dispatch::COMPRESS).clone();
    assert!(
        eventually(Duration::from_secs(20), async || heavy
            .metrics()
            .in_flight
            .get()
            == 1)
        .await
    );
    call.abort();
    let _ = call.await;
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert_eq!(
        metric(
            &text,
            "imagegate_lane_requests_total{code=\"CANCELLED\",lane=\"heavy\",method=\"compute.ImageService/Compress\"}"
        ),
        Some(1.0),
        "the dropped call is missing from the lane metrics"
    );
    assert_eq!(heavy.metrics().in_flight.get(), 0);
    log.release("Compress");
}

#[tokio::test]
async fn a_hung_compute_found_by_a_health_check_makes_image_calls_fail_fast() {
    // Compute accepts calls and never answers them (a hung process, as a SIGSTOP would).
    let log = CallLog::default();
    let compute = start_compute(compute_config(), Some(log.hook()));
    log.hold("Check");
    log.hold("Compress");
    let mut config = bff_config(&compute.url());
    config.lanes.heavy.deadline = Duration::from_secs(30);
    config.lanes.heavy.circuit_open_for = Duration::from_secs(3600);
    config.lanes.realtime.deadline = Duration::from_millis(300);
    let bff = start_bff(config);
    let health = reqwest::get(bff.url("/health")).await.unwrap();
    assert_eq!(health.status(), 503);
    // The realtime lane's verdict reached the heavy lane: no 30 s wait, a 503 at once.
    let started = std::time::Instant::now();
    let b = problem(
        post(
            bff.url("/v1/images/compress"),
            Form::new().part("file", file(jpeg(16, 16))),
        )
        .await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert_eq!(b["type"], "urn:imagegate:problem:circuit-open", "{b}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Compute thaws: the next SERVING health check lets image calls through again.
    log.release("Check");
    log.release("Compress");
    assert!(
        eventually(Duration::from_secs(20), async || reqwest::get(
            bff.url("/health")
        )
        .await
        .unwrap()
        .status()
            == 200)
        .await
    );
    let r = post(
        bff.url("/v1/images/compress"),
        Form::new().part("file", file(jpeg(16, 16))),
    )
    .await;
    assert_eq!(r.status(), 200);
}

/// Compresses `images` through the BFF all at once; each answer's status and body length.
async fn compress_at_once(
    bff: &Bff,
    images: impl IntoIterator<Item = Vec<u8>>,
) -> Vec<(StatusCode, usize)> {
    let uploads: Vec<_> = images
        .into_iter()
        .map(|image| {
            let url = bff.url("/v1/images/compress");
            tokio::spawn(async move {
                let r = post(url, Form::new().part("file", file(image))).await;
                (r.status(), r.bytes().await.unwrap().len())
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(uploads.len());
    for upload in uploads {
        answers.push(upload.await.unwrap());
    }
    answers
}

#[tokio::test]
async fn a_yielding_heavy_lane_serves_uploads_and_reports_its_pacing() {
    let compute = start_compute(compute_config(), None);
    let mut config = bff_config(&compute.url());
    config.lanes.heavy.yield_to = "realtime".to_string();
    let bff = start_bff(config);

    for (status, len) in compress_at_once(&bff, (0..6).map(|_| jpeg(1600, 1200))).await {
        assert_eq!(status, 200);
        assert!(len > 1000);
    }
    assert_eq!(
        reqwest::get(bff.url("/health")).await.unwrap().status(),
        200
    );
    let text = metrics_text(&bff).await;
    assert!(
        metric(&text, "imagegate_lane_path_delay_seconds{lane=\"heavy\"}").is_some(),
        "{text}"
    );
    // Nothing left to send: whatever the pacer did under the burst, no cap stays in force.
    assert!(
        eventually_metric(
            &bff,
            "imagegate_lane_pacing_rate_bytes{lane=\"heavy\"}",
            0.0,
            Duration::from_secs(10)
        )
        .await,
        "the heavy lane stayed paced while idle"
    );
    // A lane that does not yield reports no pacing at all.
    let text = metrics_text(&bff).await;
    assert_eq!(
        metric(&text, "imagegate_lane_pacing_rate_bytes{lane=\"realtime\"}"),
        Some(0.0)
    );
}

/// `lanes.heavy.io_threads = 0`: the HTTP workers drive the heavy lane's connections
/// themselves (each its share), with the same answers and no more connections than configured.
#[tokio::test]
async fn a_heavy_lane_driven_by_the_http_workers_serves_uploads_on_its_own_connections() {
    let compute = start_compute(compute_config(), None);
    let mut config = bff_config(&compute.url());
    config.bff.workers = 2;
    config.lanes.heavy.io_threads = 0;
    config.lanes.heavy.connections = 4;
    let bff = start_bff(config);

    let images = (0..12).map(|i| jpeg(320 + i * 16, 240));
    for (status, len) in compress_at_once(&bff, images).await {
        assert_eq!(status, 200);
        assert!(len > 100);
    }
    let text = metrics_text(&bff).await;
    let open = metric(&text, "imagegate_lane_connections{lane=\"heavy\"}").unwrap();
    assert!(
        (1.0..=4.0).contains(&open),
        "between one and `connections` open: {open}"
    );
    // The realtime lane keeps its own runtime and answers as ever.
    assert_eq!(
        reqwest::get(bff.url("/health")).await.unwrap().status(),
        200
    );
}
