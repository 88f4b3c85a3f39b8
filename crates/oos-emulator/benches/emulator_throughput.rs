//! Throughput of the emulator on loopback with signed requests: 16 concurrent workers, 20,000
//! requests (50 % Get, 25 % List, 25 % Update). Run: `cargo bench --bench emulator_throughput`.
//! Optional: `EMU_BENCH_REQUESTS`, `EMU_BENCH_CONCURRENCY`.

use oos_emulator::testsign::TestRequest;
use oos_emulator::{self as emulator, AccessKey, EmulatorConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const ID: &str = "benchKey";
const SECRET: &str = "benchSecret";
const NAMES: usize = 50;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn request(i: usize) -> TestRequest {
    let name = format!("bench-{:02}", i % NAMES);
    match i % 4 {
        0 | 1 => TestRequest::new(
            "GetChatConfiguration",
            &[("RegionId", "cn-hangzhou"), ("Name", &name)],
        ),
        2 => TestRequest::new(
            "ListChatConfigurations",
            &[("RegionId", "cn-hangzhou"), ("MaxResults", "20")],
        ),
        _ => TestRequest::new(
            "UpdateChatConfiguration",
            &[
                ("RegionId", "cn-hangzhou"),
                ("Name", &name),
                ("RamRole", if i % 8 == 3 { "RoleA" } else { "RoleB" }),
            ],
        ),
    }
}

fn main() {
    let total = env_usize("EMU_BENCH_REQUESTS", 20_000).max(1);
    let concurrency = env_usize("EMU_BENCH_CONCURRENCY", 16).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let e = emulator::start(EmulatorConfig { access_keys: vec![AccessKey::new(ID, SECRET)], ..Default::default() })
            .await
            .unwrap();
        let endpoint = e.endpoint();
        let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
        for i in 0..NAMES {
            let name = format!("bench-{i:02}");
            let conf = r#"{"DingTalkClientId":"id","DingTalkClientSecret":"s","DingTalkTemplateId":"t"}"#;
            let r = TestRequest::new(
                "CreateChatConfiguration",
                &[("RegionId", "cn-hangzhou"), ("Name", &name), ("Type", "DingTalk"), ("Configuration", conf)],
            );
            assert!(r.build(&client, &endpoint, ID, SECRET).send().await.unwrap().status().is_success());
        }
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let (client, endpoint, next) = (client.clone(), endpoint.clone(), next.clone());
            workers.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0usize;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let t = Instant::now();
                    match request(i).build(&client, &endpoint, ID, SECRET).send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                        }
                        _ => errors += 1,
                    }
                    lat.push(t.elapsed());
                }
                (lat, errors)
            }));
        }
        let mut lat: Vec<Duration> = Vec::with_capacity(total);
        let mut errors = 0;
        for w in workers {
            let (l, er) = w.await.unwrap();
            lat.extend(l);
            errors += er;
        }
        let elapsed = started.elapsed();
        lat.sort();
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        println!(
            "emulator_throughput: {} requests, concurrency {concurrency}, {:.2} s, {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, errors {errors}",
            lat.len(),
            elapsed.as_secs_f64(),
            lat.len() as f64 / elapsed.as_secs_f64(),
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
        );
        println!("emulator_throughput: calls {:?}", e.calls());
        e.shutdown().await;
        assert_eq!(errors, 0, "every benchmark request must succeed");
    });
}
