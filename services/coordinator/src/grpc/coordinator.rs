//! `Coordinator`: the escalation ladder, a thin mapping of requests onto the
//! [`Engine`](crate::escalations::Engine). Without a configured ladder every call answers
//! `FAILED_PRECONDITION`.

use std::pin::Pin;

use doorzet_mesh::Caller;
use doorzet_proto::v1::{self, coordinator_server};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::escalations::Engine;

/// The `Coordinator` service.
#[derive(Debug, Clone, Default)]
pub struct CoordinatorService {
    engine: Option<Engine>,
}

impl CoordinatorService {
    /// The service over `engine` (`None`: no ladder configured).
    pub fn new(engine: Option<Engine>) -> Self {
        Self { engine }
    }

    fn engine(&self) -> Result<&Engine, Status> {
        self.engine.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "this coordinator runs no escalation ladder (no [escalations] in its configuration)",
            )
        })
    }
}

fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    Ok(Caller::from_request(request)?.clone())
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::EscalationEvent, Status>> + Send>>;

#[tonic::async_trait]
impl coordinator_server::Coordinator for CoordinatorService {
    async fn submit_escalation(
        &self,
        request: Request<v1::SubmitEscalationRequest>,
    ) -> Result<Response<v1::SubmitEscalationResponse>, Status> {
        let caller = caller(&request)?;
        let escalation = self.engine()?.submit(&caller, request.into_inner()).await?;
        Ok(Response::new(v1::SubmitEscalationResponse {
            escalation: Some(escalation),
        }))
    }

    async fn get_escalation(
        &self,
        request: Request<v1::GetEscalationRequest>,
    ) -> Result<Response<v1::Escalation>, Status> {
        let caller = caller(&request)?;
        let id = request.into_inner().escalation_id;
        Ok(Response::new(self.engine()?.get(&caller, &id).await?))
    }

    async fn list_escalations(
        &self,
        request: Request<v1::ListEscalationsRequest>,
    ) -> Result<Response<v1::ListEscalationsResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.engine()?.list(&caller, request.into_inner()).await?,
        ))
    }

    async fn watch_escalation(
        &self,
        request: Request<v1::WatchEscalationRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let engine = self.engine()?.clone();
        engine.get(&caller, &req.escalation_id).await?;
        // Subscribe before reading the stored events, so nothing falls between the two.
        let mut live = engine.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut last = req.after_sequence;
            let mut catch_up = true;
            loop {
                if catch_up {
                    match engine.events_after(&req.escalation_id, last).await {
                        Ok(events) => {
                            for e in events {
                                last = e.sequence;
                                if tx.send(Ok(e)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(Status::from(e))).await;
                            return;
                        }
                    }
                    catch_up = false;
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    event = live.recv() => match event {
                        Ok(e) if e.escalation_id == req.escalation_id && e.sequence > last => {
                            if e.sequence != last + 1 {
                                // Committed by another transaction in between: read them in order.
                                catch_up = true;
                                continue;
                            }
                            last = e.sequence;
                            if tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => catch_up = true,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn plan_meeting(
        &self,
        request: Request<v1::PlanMeetingRequest>,
    ) -> Result<Response<v1::Escalation>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.engine()?
                .plan_meeting(&caller, request.into_inner())
                .await?,
        ))
    }

    async fn record_decision(
        &self,
        request: Request<v1::RecordDecisionRequest>,
    ) -> Result<Response<v1::Escalation>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.engine()?
                .record_decision(&caller, request.into_inner())
                .await?,
        ))
    }

    async fn report_commitment(
        &self,
        request: Request<v1::ReportCommitmentRequest>,
    ) -> Result<Response<v1::Escalation>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.engine()?
                .report_commitment(&caller, request.into_inner())
                .await?,
        ))
    }

    async fn confirm_follow_up(
        &self,
        request: Request<v1::ConfirmFollowUpRequest>,
    ) -> Result<Response<v1::Escalation>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.engine()?
                .confirm_follow_up(&caller, request.into_inner())
                .await?,
        ))
    }

    async fn escalate_tier(
        &self,
        request: Request<v1::EscalateTierRequest>,
    ) -> Result<Response<v1::Escalation>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.engine()?
                .escalate_tier(&caller, request.into_inner())
                .await?,
        ))
    }

    async fn scale_down(
        &self,
        request: Request<v1::ScaleDownRequest>,
    ) -> Result<Response<v1::Escalation>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.engine()?
                .scale_down(&caller, request.into_inner())
                .await?,
        ))
    }

    async fn get_report(
        &self,
        request: Request<v1::GetReportRequest>,
    ) -> Result<Response<v1::GetReportResponse>, Status> {
        let caller = caller(&request)?;
        let id = request.into_inner().escalation_id;
        Ok(Response::new(self.engine()?.report(&caller, &id).await?))
    }

    async fn mandates_changed(
        &self,
        request: Request<v1::MandatesChangedRequest>,
    ) -> Result<Response<v1::MandatesChangedResponse>, Status> {
        let caller = caller(&request)?;
        self.engine()?.mandates_changed(caller.org);
        Ok(Response::new(v1::MandatesChangedResponse {}))
    }

    async fn get_statistics(
        &self,
        request: Request<v1::GetStatisticsRequest>,
    ) -> Result<Response<v1::GetStatisticsResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.engine()?
                .statistics(&caller, request.into_inner())
                .await?,
        ))
    }
}
