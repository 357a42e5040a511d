//! The HealthService client: the health checks behind `/health` and `/health/ready`, on the
//! realtime lane by default. A check's verdict is shared with the other lanes that send to the
//! same compute: an endpoint found hung leaves their rotation too, and SERVING lets their open
//! circuits probe at once.

use std::sync::Arc;
use std::time::Duration;

use super::service_client;
use crate::dispatch::lane::{Lane, ReportsWork};
use crate::dispatch::{DispatchError, Dispatcher};
use crate::proto::health_service_client::HealthServiceClient;
use crate::proto::{HealthCheckRequest, HealthCheckResponse, ServingStatus};

/// gRPC path of HealthService.Check (its routing and metrics name).
pub const HEALTH_CHECK: &str = "compute.HealthService/Check";

service_client!(HealthServiceClient);
type Client = HealthServiceClient<crate::dispatch::channel::LaneChannel>;

impl ReportsWork for HealthCheckResponse {
    /// A health check does no work: the adaptive limit does not judge its wait.
    fn work(&self) -> Option<Duration> {
        None
    }
}

impl Dispatcher {
    /// Asks compute's HealthService within `timeout` (or the lane's deadline if shorter),
    /// admission included: the lane enforces it, so a hung compute shows in its metrics and
    /// its endpoint is ejected like any other that fails.
    pub async fn health_check(&self, timeout: Duration) -> Result<ServingStatus, DispatchError> {
        let lane = self.lane_for(HEALTH_CHECK);
        let response = self
            .call_unary(
                HEALTH_CHECK,
                Some(timeout),
                HealthCheckRequest::default(),
                |mut c: Client, r| async move { c.check(r).await },
            )
            .await;
        self.share_endpoint_health(lane);
        if response.as_ref().is_err_and(compute_failed) {
            self.tell_lanes_compute_fails(lane);
        }
        let response = response?;
        let status = ServingStatus::try_from(response.status).unwrap_or(ServingStatus::Unknown);
        if status == ServingStatus::Serving {
            self.tell_lanes_compute_serves(lane.name());
        }
        Ok(status)
    }

    /// A health check found compute failing and `checked` has no endpoint left to try (its
    /// only one, or all of them, out): the other lanes sending there open their circuits, the
    /// mirror of the SERVING hint, which closes them again as soon as compute answers.
    fn tell_lanes_compute_fails(&self, checked: &Lane) {
        let endpoints = checked.upstream().endpoints();
        if !(endpoints.len() == 1 || endpoints.iter().all(|e| e.is_ejected())) {
            return; // others remain: ejection (share_endpoint_health) steers around this one
        }
        let Some(address) = self.addresses.get(checked.name()) else {
            return;
        };
        for (name, lane) in &self.lanes {
            if name != checked.name() && self.addresses.get(name) == Some(address) {
                lane.note_compute_failing();
            }
        }
    }

    /// After a health check: every other lane sending to the same compute follows `checked`'s
    /// view of each endpoint (out of rotation while its health checks fail, back when they
    /// pass), so a replica that hangs costs the heavy lane nothing once `/health` found it.
    fn share_endpoint_health(&self, checked: &Lane) {
        let Some(address) = self.addresses.get(checked.name()) else {
            return;
        };
        let endpoints = checked.upstream().endpoints();
        for (name, lane) in &self.lanes {
            if name == checked.name() || self.addresses.get(name) != Some(address) {
                continue;
            }
            if Arc::ptr_eq(lane.upstream(), checked.upstream()) {
                continue; // shared mode: one pool
            }
            for endpoint in endpoints.iter() {
                lane.upstream()
                    .follow_peer(&endpoint.address, endpoint.is_ejected());
            }
        }
    }

    /// Compute at `checked`'s address answered SERVING: the other lanes sending there stop
    /// failing fast now (their open circuits probe with the next call) rather than after
    /// `circuit_open_for`, so heavy calls recover with `/health`, not seconds later.
    fn tell_lanes_compute_serves(&self, checked: &str) {
        let Some(address) = self.addresses.get(checked) else {
            return;
        };
        for (name, lane) in &self.lanes {
            if name != checked && self.addresses.get(name) == Some(address) {
                lane.note_compute_serving();
            }
        }
    }
}

/// The health check failed because compute did (unreachable, too slow, broken), not because
/// the realtime lane itself shed it.
fn compute_failed(e: &DispatchError) -> bool {
    match e {
        DispatchError::Deadline { .. } => true,
        DispatchError::Status(status) => crate::vocab::failure::is_compute_failure(status.code()),
        DispatchError::Saturated { .. } | DispatchError::CircuitOpen { .. } => false,
    }
}
