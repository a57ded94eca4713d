//! The `/admin` dashboard's static files: served without the key (they hold no data),
//! with a content security policy that keeps the page to its own origin. The page itself
//! is tested in headless Chromium by server/admin-tests.
#![allow(clippy::unwrap_used)]

mod support;

use support::*;

#[tokio::test]
async fn the_dashboard_files_are_served_without_the_key() {
    let gw = TestGateway::start().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (path, media, marker) in [
        ("/admin", "text/html", "<title>Tether gateway</title>"),
        ("/admin/app.js", "text/javascript", "/v1/stats"),
        ("/admin/style.css", "text/css", "#chart"),
    ] {
        let response = http
            .get(format!("http://{}{path}", gw.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(media),
            "{path}"
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert!(response.text().await.unwrap().contains(marker), "{path}");
    }
    let response = http
        .get(format!("http://{}/admin/", gw.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(response.headers()["location"], "/admin");
    let (status, _) = gw
        .api_with_key(reqwest::Method::GET, "/admin/nothing-here", None, None)
        .await;
    assert_eq!(status, 404);
}
