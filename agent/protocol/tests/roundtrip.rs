//! The generated stubs talk to each other over a connected socket pair, the
//! way the agent serves an already-open virtio-serial port.

use std::sync::Arc;

use cloister_protocol::health::{HealthCheckResponse, VersionRequest, VersionResponse};
use cloister_protocol::health_ttrpc::{create_health, Health, HealthClient};
use cloister_protocol::ttrpc::asynchronous::transport::{Listener, Socket};
use cloister_protocol::ttrpc::asynchronous::{Client, Server, TtrpcContext};
use cloister_protocol::{check_compatible, ApiVersion, API_VERSION};

struct FakeAgent;

#[async_trait::async_trait]
impl Health for FakeAgent {
    async fn check(
        &self,
        _ctx: &TtrpcContext,
        _req: cloister_protocol::health::CheckRequest,
    ) -> ttrpc::Result<HealthCheckResponse> {
        let mut r = HealthCheckResponse::new();
        r.status = cloister_protocol::health::health_check_response::ServingStatus::SERVING.into();
        Ok(r)
    }

    async fn version(
        &self,
        _ctx: &TtrpcContext,
        req: VersionRequest,
    ) -> ttrpc::Result<VersionResponse> {
        let mut r = VersionResponse::new();
        r.agent_version = "test".into();
        // Echo a different major when the client asks for it, so the test
        // sees the refusal path.
        r.api_major = if req.client_api_major == 99 {
            2
        } else {
            API_VERSION.major
        };
        r.api_minor = API_VERSION.minor;
        Ok(r)
    }
}

#[tokio::test]
async fn version_and_check_over_a_socket_pair() {
    let (guest, host) = tokio::net::UnixStream::pair().unwrap();
    let listener = Listener::new(futures::stream::iter([Ok::<_, std::io::Error>(guest)]));
    let mut server = Server::new()
        .register_service(create_health(Arc::new(FakeAgent)))
        .add_listener(listener);
    server.start().await.unwrap();

    let client = HealthClient::new(Client::new(Socket::new(host)));
    let ctx = || ttrpc::context::with_timeout(5_000_000_000);

    let check = client.check(ctx(), &Default::default()).await.unwrap();
    assert_eq!(
        check.status.enum_value(),
        Ok(cloister_protocol::health::health_check_response::ServingStatus::SERVING)
    );

    let v = client.version(ctx(), &Default::default()).await.unwrap();
    let peer = ApiVersion {
        major: v.api_major,
        minor: v.api_minor,
    };
    assert_eq!(v.agent_version, "test");
    check_compatible(API_VERSION, peer).unwrap();

    let mut req = VersionRequest::new();
    req.client_api_major = 99;
    let v = client.version(ctx(), &req).await.unwrap();
    let peer = ApiVersion {
        major: v.api_major,
        minor: v.api_minor,
    };
    assert!(check_compatible(API_VERSION, peer).is_err());
}
