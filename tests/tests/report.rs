//! `ember report` opens in a browser: the HTML is rendered by headless Chromium
//! (installed by `make test`) and every figure must have rendered content.

use std::time::Duration;

use emberdb_client::Metric;
use emberdb_tests::{TestServer, clustered, points, upsert_all, wait_ready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_renders_in_headless_chromium() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    c.create_version("imgs", "v1", 16, Metric::L2).await?;
    let (vs, mut labels) = clustered(41, 1500, 16, 6);
    // A label that needs escaping, and an overlap to produce confusion pairs and actions.
    for (i, l) in labels.iter_mut().enumerate() {
        if l == "c0" {
            *l = "<cat & \"dog\">".into();
        } else if l == "c1" && i % 2 == 0 {
            *l = "c2".into();
        }
    }
    upsert_all(&mut c, "imgs", "v1", points(&vs, &labels, 0), 500).await?;
    wait_ready(&mut c, "imgs", "v1").await?;
    let data =
        emberdb_client::report::fetch(&mut c, "imgs", "v1", Some(Duration::from_secs(60))).await?;
    let html = emberdb_client::report::render_html(&data);
    assert!(
        html.contains("&lt;cat &amp; &quot;dog&quot;&gt;") && !html.contains("<cat &"),
        "labels are escaped"
    );
    assert!(!data.confusion.pairs.is_empty() && !data.actions.items.is_empty());

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("report.html");
    std::fs::write(&file, &html)?;
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "chromium not installed; `make test` installs it via scripts/setup-test.sh"
            )
        })?;
    let profile = dir.path().join("profile");
    let mut child = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=2000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("file://{}", file.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut dom = String::new();
    let read = async {
        use tokio::io::AsyncReadExt;
        stdout.read_to_string(&mut dom).await
    };
    tokio::time::timeout(Duration::from_secs(60), read).await??;
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    // The page's own script counts the figures that rendered with content and a size.
    assert!(
        dom.contains(r#"data-figures="3""#),
        "figures did not render:\n{}",
        &dom[..dom.len().min(2000)]
    );
    for id in [
        "confusion-heatmap",
        "margin-histograms",
        "projection",
        "pairs",
        "actions",
    ] {
        assert!(dom.contains(&format!(r#"id="{id}""#)), "missing {id}");
    }
    assert!(
        dom.matches("class=\"pt\"").count() >= 1000,
        "projection points"
    );
    assert!(dom.contains("class=\"ticket\""), "action items rendered");
    Ok(())
}
