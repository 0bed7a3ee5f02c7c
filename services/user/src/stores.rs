//! What each regional store announces about itself (region, jurisdiction,
//! database server), asked over the bus: before a sign-up sends it any
//! personal data, for the residency evidence, and by `/readyz`, which
//! reports every store announcing another jurisdiction than its region's.

use idm_bus::Bus;
use idm_core::proto::store::{GetStoreInfo, StoreInfo};
use idm_core::{ApiError, Region};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// How long `/readyz` waits for a store's answer: a store that is down is
/// an outage of its region (placement falls back around it), not a reason
/// for the directory to be unready.
const READY_WAIT: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct Stores {
    last: Mutex<BTreeMap<Region, StoreInfo>>,
}

impl Stores {
    /// Asks `region`'s store what it announces now.
    pub async fn announced(&self, bus: &Bus, region: Region) -> Result<StoreInfo, ApiError> {
        let info = bus.send_to(region, &GetStoreInfo {}).await?;
        if let Ok(mut last) = self.last.lock() {
            last.insert(region, info.clone());
        }
        Ok(info)
    }

    /// The last answer of `region`'s store, if it ever answered.
    pub fn last_known(&self, region: Region) -> Option<StoreInfo> {
        self.last.lock().ok()?.get(&region).cloned()
    }

    /// A refused answer is not kept as the store's last known one.
    pub fn refused(&self, region: Region) {
        if let Ok(mut last) = self.last.lock() {
            last.remove(&region);
        }
    }

    /// Every region's store asked at once; `Err` names each one that
    /// announces the wrong region or jurisdiction.
    pub async fn misconfigured(&self, bus: &Bus) -> Result<(), String> {
        let asks = Region::ALL.into_iter().map(|region| async move {
            let answer = tokio::time::timeout(READY_WAIT, self.announced(bus, region)).await;
            (region, answer)
        });
        let refusals: Vec<String> = futures::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(|(region, answer)| match answer {
                Ok(Ok(info)) => info.refusal(region),
                // Down or slow: an outage, not a misconfiguration.
                _ => None,
            })
            .collect();
        if refusals.is_empty() {
            Ok(())
        } else {
            Err(format!("stores refused: {}", refusals.join("; ")))
        }
    }
}
