use super::*;

#[test]
fn defaults_are_valid_and_match_the_contract() {
    let c = Config::from_toml("").unwrap();
    assert_eq!(c.mode, Mode::Bulkhead);
    assert_eq!(c.lanes.heavy.connections, 4);
    assert_eq!(c.lanes.heavy.max_in_flight, 32);
    assert_eq!(c.lanes.heavy.queue_wait, Duration::from_millis(250));
    assert_eq!(c.lanes.heavy.deadline, Duration::from_secs(30));
    assert_eq!(c.lanes.realtime.connections, 1);
    assert_eq!(c.lanes.realtime.max_in_flight, 256);
    assert_eq!(c.lanes.realtime.max_message_size, Size::mib(4));
    assert_eq!(c.lane_for("/compute.ImageService/Compress"), "heavy");
    assert_eq!(c.lane_for("/compute.HealthService/Check"), "realtime");
}

#[test]
fn a_partial_lane_table_keeps_that_lanes_defaults() {
    let c = Config::from_toml("[lanes.realtime]\nmax_in_flight = 7\nqueue_wait = \"5ms\"").unwrap();
    assert_eq!(c.lanes.realtime.max_in_flight, 7);
    assert_eq!(c.lanes.realtime.queue_wait, Duration::from_millis(5));
    assert_eq!(c.lanes.realtime.deadline, Duration::from_secs(2));
    assert_eq!(c.lanes.heavy.max_in_flight, 32);
}

#[test]
fn unknown_keys_and_bad_values_name_the_key() {
    let e = Config::from_toml("[lanes.heavy]\nmax_inflight = 3").unwrap_err();
    assert!(e.to_string().contains("max_inflight"), "{e}");
    let e = Config::from_toml("[lanes.heavy]\nmax_in_flight = 0").unwrap_err();
    assert!(e.to_string().contains("lanes.heavy.max_in_flight"), "{e}");
    let e = Config::from_toml("[lanes.heavy]\nqueue_wait = \"soon\"").unwrap_err();
    assert!(e.to_string().contains("queue_wait"), "{e}");
    let e = Config::from_toml("[lanes.heavy]\nmax_message_size = \"lots\"").unwrap_err();
    assert!(e.to_string().contains("max_message_size"), "{e}");
    let e = Config::from_toml("[routes]\n\"compute.ImageService\" = \"fast\"").unwrap_err();
    assert!(e.to_string().contains("compute.ImageService"), "{e}");
}

#[test]
fn method_routes_win_over_service_routes() {
    let c = Config::from_toml("[routes]\n\"compute.ImageService/Resize\" = \"realtime\"").unwrap();
    assert_eq!(c.lane_for("/compute.ImageService/Resize"), "realtime");
    assert_eq!(c.lane_for("/compute.ImageService/Compress"), "heavy");
}

#[test]
fn a_lane_of_its_own_is_made_by_config_alone() {
    let c = Config::from_toml(
        "[lanes.files]\nurl = \"files-host:50052\"\nmax_in_flight = 8\n\
         [routes]\n\"compute.FileService\" = \"files\"",
    )
    .unwrap();
    let files = c.lanes.get("files").unwrap();
    assert_eq!(files.url.as_deref(), Some("http://files-host:50052"));
    assert_eq!(files.max_in_flight, 8);
    assert_eq!(
        files.deadline,
        Duration::from_secs(30),
        "unset keys: heavy defaults"
    );
    assert_eq!(c.lane_for("/compute.FileService/Upload"), "files");
    // A lane no route uses is most likely a typo.
    let e = Config::from_toml("[lanes.heavvy]\nmax_in_flight = 8").unwrap_err();
    assert!(e.to_string().contains("lanes.heavvy"), "{e}");
    let e = Config::from_toml("[lanes.files]\nmax_inflight = 8\n[routes]\n\"a.B\" = \"files\"")
        .unwrap_err();
    assert!(e.to_string().contains("max_inflight"), "{e}");
}

#[test]
fn compute_url_accepts_the_seeds_forms() {
    assert_eq!(
        normalize_compute_url("localhost:50051").unwrap(),
        "http://localhost:50051"
    );
    assert_eq!(
        normalize_compute_url("http://10.0.0.1:9000").unwrap(),
        "http://10.0.0.1:9000"
    );
    assert!(normalize_compute_url("localhost").is_err());
    assert!(normalize_compute_url("ftp://x:1").is_err());
}

#[test]
fn the_store_section_has_defaults_and_names_bad_keys() {
    let c = Config::from_toml("").unwrap();
    assert_eq!(c.store.backend, StoreBackend::Fs);
    assert_eq!(c.store.dir, "./data/uploads");
    let c = Config::from_toml(
        "[store]\nbackend = \"s3\"\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:9000\"\nallow_http = true\nmax_age = \"1h\"\nmax_total_bytes = \"5MiB\"",
    )
    .unwrap();
    assert_eq!(c.store.backend, StoreBackend::S3);
    assert_eq!(c.store.max_age, Duration::from_secs(3600));
    assert_eq!(c.store.max_total_bytes, Size::mib(5));
    let e = Config::from_toml("[store]\nbackend = \"s3\"").unwrap_err();
    assert!(e.to_string().contains("store.bucket"), "{e}");
    let e =
        Config::from_toml("[store]\nbackend = \"s3\"\nbucket = \"b\"\nendpoint = \"http://x:1\"")
            .unwrap_err();
    assert!(e.to_string().contains("store.allow_http"), "{e}");
    let e = Config::from_toml("[store]\nprefix = \"../up\"").unwrap_err();
    assert!(e.to_string().contains("store.prefix"), "{e}");
    let e = Config::from_toml("[store]\nbucket_name = \"b\"").unwrap_err();
    assert!(e.to_string().contains("bucket_name"), "{e}");
    let e = Config::from_toml("[store]\nbackend = \"ftp\"").unwrap_err();
    assert!(e.to_string().contains("backend"), "{e}");
    let c = Config::from_toml("[store]\nsecret_access_key = \"hunter2\"\naccess_key_id = \"a\"")
        .unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn service_link_variables_are_not_config_paths() {
    for k in [
        "bff_service_host",
        "compute_port_50051_tcp",
        "compute_service_port_grpc",
        "foo",
        "config",
    ] {
        assert!(!is_config_env_key(k), "{k}");
    }
    for k in [
        "lanes__heavy__max_in_flight",
        "mode",
        "compute_url",
        "bff__listen",
        "lanes__heavy__max_inflight",
    ] {
        assert!(is_config_env_key(k), "{k}");
    }
    let ignored = ignored_among(
        [
            "IMAGEGATE_BFF_SERVICE_HOST",
            "IMAGEGATE_MODE",
            "IMAGEGATE_LANES__HEAVY__RETRIES",
            "IMAGEGATE_CONFIG",
            "PATH",
        ]
        .into_iter()
        .map(String::from),
    );
    assert_eq!(ignored, ["IMAGEGATE_BFF_SERVICE_HOST"]);
}

#[test]
fn cors_origins_take_a_list_or_a_comma_string() {
    let c = Config::from_toml(
        "[bff.cors]\nallowed_origins = \"https://a.example, http://localhost:3000\"\nmax_age = \"1m\"",
    )
    .unwrap();
    assert_eq!(
        c.bff.cors.allowed_origins.0,
        ["https://a.example", "http://localhost:3000"]
    );
    assert_eq!(c.bff.cors.max_age, Duration::from_secs(60));
    let c = Config::from_toml("[bff.cors]\nallowed_origins = [\"*\"]").unwrap();
    assert_eq!(c.bff.cors.allowed_origins.0, ["*"]);
    assert_eq!(c.bff.cors.max_age, Duration::from_secs(600));
    let e =
        Config::from_toml("[bff.cors]\nallowed_origins = [\"https://a.example/\"]").unwrap_err();
    assert!(e.to_string().contains("bff.cors.allowed_origins"), "{e}");
    assert!(Config::from_toml("")
        .unwrap()
        .bff
        .cors
        .allowed_origins
        .0
        .is_empty());
}

#[test]
fn lanes_have_a_concurrency_mode_and_a_floor() {
    let c = Config::from_toml("").unwrap();
    assert_eq!(c.lanes.heavy.concurrency, Concurrency::Adaptive);
    assert_eq!(c.lanes.realtime.concurrency, Concurrency::Fixed);
    assert_eq!(c.lanes.heavy.min_in_flight, 1);
    let c = Config::from_toml("[lanes.heavy]\nconcurrency = \"fixed\"\nmin_in_flight = 4").unwrap();
    assert_eq!(c.lanes.heavy.concurrency, Concurrency::Fixed);
    let e = Config::from_toml("[lanes.heavy]\nmin_in_flight = 40").unwrap_err();
    assert!(e.to_string().contains("lanes.heavy.min_in_flight"), "{e}");
    let e = Config::from_toml("[lanes.heavy]\nconcurrency = \"auto\"").unwrap_err();
    assert!(e.to_string().contains("concurrency"), "{e}");
    let e = Config::from_toml("[log]\nformat = \"xml\"").unwrap_err();
    assert!(e.to_string().contains("format"), "{e}");
}

#[test]
fn tcp_rto_min_above_the_kernels_floor_is_refused_naming_the_key() {
    assert!(Config::from_toml("[lanes.heavy]\ntcp_rto_min = \"200ms\"").is_ok());
    let e = Config::from_toml("[lanes.heavy]\ntcp_rto_min = \"500ms\"").unwrap_err();
    assert!(e.to_string().contains("lanes.heavy.tcp_rto_min"), "{e}");
    let e = Config::from_toml("[compute]\ntcp_rto_min = \"1s\"").unwrap_err();
    assert!(e.to_string().contains("compute.tcp_rto_min"), "{e}");
}

#[test]
fn yielding_is_off_by_default_and_names_a_known_other_lane() {
    let c = Config::from_toml("").unwrap();
    assert_eq!(c.lanes.heavy.yield_to, "");
    assert_eq!(c.lanes.heavy.yield_delay_target, Duration::from_millis(3));
    assert_eq!(c.lanes.heavy.yield_min_rate, Size::mib(1));
    let c = Config::from_toml(
        "[lanes.heavy]\nyield_to = \"realtime\"\nyield_delay_target = \"5ms\"\nyield_min_rate = \"4MiB\"",
    )
    .unwrap();
    assert_eq!(c.lanes.heavy.yield_to, "realtime");
    assert_eq!(c.lanes.heavy.yield_delay_target, Duration::from_millis(5));
    assert_eq!(c.lanes.heavy.yield_min_rate, Size::mib(4));
    let e = Config::from_toml("[lanes.heavy]\nyield_to = \"fast\"").unwrap_err();
    assert!(
        e.to_string()
            .contains("lanes.heavy.yield_to: unknown lane \"fast\""),
        "{e}"
    );
    let e = Config::from_toml("[lanes.heavy]\nyield_to = \"heavy\"").unwrap_err();
    assert!(
        e.to_string()
            .contains("lanes.heavy.yield_to: a lane cannot yield to itself"),
        "{e}"
    );
    let e = Config::from_toml("[lanes.heavy]\nyield_delay_target = \"0s\"").unwrap_err();
    assert!(
        e.to_string().contains("lanes.heavy.yield_delay_target"),
        "{e}"
    );
    let e = Config::from_toml("[lanes.heavy]\nyield_min_rate = \"1KiB\"").unwrap_err();
    assert!(e.to_string().contains("lanes.heavy.yield_min_rate"), "{e}");
}

#[test]
fn sizes_parse_from_strings_and_integers() {
    let c =
        Config::from_toml("[bff]\nmax_file_size = \"1MiB\"\nmax_request_size = 2097152").unwrap();
    assert_eq!(c.bff.max_file_size, Size::mib(1));
    assert_eq!(c.bff.max_request_size, Size::mib(2));
}
