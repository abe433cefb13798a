//! The gateway starts, proxies to an origin, and answers on its own routes.

use crate::harness::*;

#[tokio::test]
async fn proxies_to_an_origin_and_answers_directly() {
    let origin = Origin::echo("a").await;
    let gw = Gateway::start(&format!(
        "[clusters.app]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"app\"\nprefix = \"/app\"\ncluster = \"app\"\n\n[[routes]]\nname = \"hello\"\npath = \"/hello\"\nrespond = {{ status = 201, body = \"hi\" }}\n",
        origin.url()
    ))
    .await;
    let (status, headers, body) = get(&gw.url("/app/x?q=1")).await;
    assert_eq!(status, 200, "{}", gw.log());
    let seen = seen(&body);
    assert_eq!(seen.uri, "/app/x?q=1");
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert!(headers.contains_key("x-request-id"));
    let (status, _, body) = get(&gw.url("/hello")).await;
    assert_eq!((status, &body[..]), (201, &b"hi"[..]));
}
