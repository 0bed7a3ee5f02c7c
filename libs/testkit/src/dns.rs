//! A tiny authoritative DNS server over UDP for the tests: answers the TXT
//! records a test sets and `NXDOMAIN` for everything else. The platform's
//! account service looks custom-domain challenges up here
//! (`ACCOUNT_DNS_RESOLVER`), so domain verification is tested through a
//! real DNS exchange with no real DNS.

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::TXT;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

type Records = Arc<Mutex<HashMap<String, Vec<String>>>>;

#[derive(Clone)]
pub struct DnsServer {
    pub addr: SocketAddr,
    records: Records,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsServer {
    pub async fn start(shutdown: CancellationToken) -> anyhow::Result<Self> {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let records: Records = Arc::default();
        let served = Arc::clone(&records);
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            loop {
                let (len, peer) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    received = socket.recv_from(&mut buffer) => match received {
                        Ok(r) => r,
                        Err(_) => continue,
                    },
                };
                let Some(answer) = buffer.get(..len).and_then(|q| answer(&served, q)) else {
                    continue;
                };
                let _ = socket.send_to(&answer, peer).await;
            }
        });
        Ok(Self { addr, records })
    }

    /// Publishes a TXT record (added to any already at `name`).
    pub fn set_txt(&self, name: &str, value: &str) {
        if let Ok(mut records) = self.records.lock() {
            records.entry(key(name)).or_default().push(value.to_owned());
        }
    }
}

fn answer(records: &Records, query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true);
    let mut found = false;
    for q in request.queries() {
        response.add_query(q.clone());
        let name = key(&q.name().to_ascii());
        let values = records
            .lock()
            .ok()
            .and_then(|r| r.get(&name).cloned())
            .unwrap_or_default();
        if !values.is_empty() {
            found = true;
        }
        if q.query_type() == RecordType::TXT {
            for value in values {
                response.add_answer(Record::from_rdata(
                    q.name().clone(),
                    1,
                    RData::TXT(TXT::new(vec![value])),
                ));
            }
        }
    }
    response.set_response_code(if found {
        ResponseCode::NoError
    } else {
        ResponseCode::NXDomain
    });
    response.to_vec().ok()
}
