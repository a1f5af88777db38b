//! OTLP/gRPC receiver: `opentelemetry.proto.collector.logs.v1.LogsService/Export`.

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::Intake;

/// The `LogsService` implementation; thin over [`Intake`].
#[derive(Debug, Clone)]
pub struct GrpcReceiver {
    intake: Intake,
}

/// The gRPC service: gzip accepted, messages bounded to `max_message_bytes` (decompressed).
pub fn service(intake: Intake, max_message_bytes: usize) -> LogsServiceServer<GrpcReceiver> {
    LogsServiceServer::new(GrpcReceiver { intake })
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message_bytes)
}

#[tonic::async_trait]
impl LogsService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        match self.intake.export(request.get_ref()).await {
            Ok(response) => Ok(Response::new(response)),
            // UNAVAILABLE is the code OTLP exporters retry on.
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }
}
