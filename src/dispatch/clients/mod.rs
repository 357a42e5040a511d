//! One client module per compute service, each a few thin methods on [`Dispatcher`] over one
//! generic lane call: the routing table picks the lane from the method's name, the lane admits,
//! sends, retries and measures the call, and the client only says which RPC to make.
//!
//! - [`image`]: ImageService (compress, resize, watermark, batch);
//! - [`health`]: HealthService (the realtime lane's health checks, shared with the other lanes);
//! - [`file`](mod@file): FileService (compression, archive extraction).
//!
//! Adding a service: its proto, a module here (method names, [`ServiceClient`] for its tonic
//! client, [`ReportsWork`] for its answers), its server module in compute, and one routing
//! entry (`config::default_routes`). See docs/extending.md.

pub mod file;
pub mod health;
pub mod image;
mod zero_copy;

use std::future::Future;
use std::time::Duration;

use crate::dispatch::channel::LaneChannel;
use tonic::Status;

use super::lane::{LaneStream, ReportsWork};
use super::{DispatchError, Dispatcher};

/// A generated tonic client, made on one of a lane's channels with the lane's message limit in
/// both directions (tonic's own default is 4 MiB).
pub trait ServiceClient {
    /// The client on `channel`, sending and receiving messages of up to `max_message` bytes.
    fn on_lane(channel: LaneChannel, max_message: usize) -> Self;
}

/// Implements [`ServiceClient`] for a generated client type.
macro_rules! service_client {
    ($client:ident) => {
        impl $crate::dispatch::clients::ServiceClient
            for $client<$crate::dispatch::channel::LaneChannel>
        {
            fn on_lane(
                channel: $crate::dispatch::channel::LaneChannel,
                max_message: usize,
            ) -> Self {
                $client::new(channel)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message)
            }
        }
    };
}
pub(crate) use service_client;

/// `elapsed_ms` is truncated to whole milliseconds: count the middle of that millisecond.
pub(crate) fn work_of(elapsed_ms: i64) -> Option<Duration> {
    u64::try_from(elapsed_ms)
        .ok()
        .map(|ms| Duration::from_micros(ms * 1000 + 500))
}

impl Dispatcher {
    /// A unary `method` (`compute.ImageService/Compress`) on the lane routed for it, within
    /// `within` if shorter than the lane's deadline.
    pub(crate) async fn call_unary<C, Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        within: Option<Duration>,
        request: Req,
        call: F,
    ) -> Result<Resp, DispatchError>
    where
        C: ServiceClient,
        Req: Clone,
        Resp: ReportsWork,
        F: Fn(C, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let lane = self.lane_for(method);
        let max = lane.config().max_message_size.as_usize();
        lane.unary_within(method, within, request, |channel, r| {
            call(C::on_lane(channel, max), r)
        })
        .await
    }

    /// A unary `method` whose request carries an upload: like [`call_unary`](Self::call_unary),
    /// but the image bytes go to the wire from the upload's own buffer, not copied into an
    /// encode buffer first (see [`zero_copy`]).
    pub(crate) async fn call_unary_with_image<Req, Resp>(
        &self,
        method: &'static str,
        request: Req,
    ) -> Result<Resp, DispatchError>
    where
        Req: zero_copy::ImagePayload + Clone + Send + 'static,
        Resp: ReportsWork + prost::Message + Default + Send + 'static,
    {
        let lane = self.lane_for(method);
        let max = lane.config().max_message_size.as_usize();
        lane.unary_within(method, None, request, |channel, r| {
            zero_copy::unary(channel, method, r, max)
        })
        .await
    }

    /// A server-streaming `method` on the lane routed for it; the stream holds its permit.
    pub(crate) async fn call_streaming<C, Req, Item, F, Fut>(
        &self,
        method: &'static str,
        request: Req,
        call: F,
    ) -> Result<LaneStream<Item>, DispatchError>
    where
        C: ServiceClient,
        Req: Clone,
        Item: Send + 'static,
        F: Fn(C, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<tonic::Streaming<Item>>, Status>>,
    {
        let lane = self.lane_for(method);
        let max = lane.config().max_message_size.as_usize();
        lane.server_streaming(method, request, |channel, r| {
            call(C::on_lane(channel, max), r)
        })
        .await
    }
}
