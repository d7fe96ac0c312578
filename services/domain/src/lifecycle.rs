//! The escalation lifecycle of DESIGN.md as a pure state machine: every transition is a function of
//! the escalation, the ladder, an event and the time, and a refusal is a typed error. The coordinator
//! stores what this returns, with its audit entry and outbox rows, in one transaction.
//!
//! ```text
//! registered → accepted | rejected → participants resolved → meeting planned → decided → monitoring → closed
//!            from any open state: escalated to a higher tier, or scaled down (a lower tier or the regular table)
//!            closed → reopened (at the tier the ladder says)
//! ```

use std::time::SystemTime;

use crate::ladder::{OnTermPassed, RegionLadder};
use crate::vocabulary;

vocabulary!(
    /// Where an escalation stands.
    State, "escalation state", [
        /// Submitted, not yet checked.
        Registered => "registered",
        /// Accepted at its tier; the term runs.
        Accepted => "accepted",
        /// Refused at registration (final).
        Rejected => "rejected",
        /// Participants found from mandates; the term runs.
        ParticipantsResolved => "participants_resolved",
        /// The meeting is planned within the term.
        MeetingPlanned => "meeting_planned",
        /// Decided, with commitments.
        Decided => "decided",
        /// Back at the regular tables; the decision is being carried out and followed up.
        Monitoring => "monitoring",
        /// Solved, or scaled down before a decision (may be reopened).
        Closed => "closed",
    ]
);

impl State {
    /// Whether the term of a tier runs (no decision yet).
    pub fn term_runs(self) -> bool {
        matches!(
            self,
            Self::Accepted | Self::ParticipantsResolved | Self::MeetingPlanned
        )
    }

    /// Whether a decision waits for its follow-up.
    pub fn following_up(self) -> bool {
        matches!(self, Self::Decided | Self::Monitoring)
    }

    /// Whether the escalation is still open (neither rejected nor closed).
    pub fn is_open(self) -> bool {
        !matches!(self, Self::Rejected | Self::Closed)
    }
}

vocabulary!(
    /// What happened, as notified to nodes and streamed to watchers (the contract's
    /// `EscalationEventType`).
    Happened, "escalation event", [
        /// Accepted at a tier.
        Accepted => "accepted",
        /// Refused at registration.
        Rejected => "rejected",
        /// Participants resolved.
        ParticipantsResolved => "participants_resolved",
        /// Meeting planned (or moved).
        MeetingPlanned => "meeting_planned",
        /// Decision recorded.
        Decided => "decided",
        /// Scaled down to the regular table for monitoring.
        Monitoring => "monitoring",
        /// Moved up a tier (by a person, or by itself when the term passed).
        Escalated => "escalated",
        /// Moved down a tier.
        ScaledDown => "scaled_down",
        /// The term passed and the process director was alerted.
        TermPassedAlert => "term_passed_alert",
        /// The follow-up date came; the registrant is asked to confirm.
        FollowUpDue => "follow_up_due",
        /// Closed.
        Closed => "closed",
        /// Reopened after a failed follow-up or by request.
        Reopened => "reopened",
    ]
);

/// An escalation as the lifecycle sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    /// State.
    pub state: State,
    /// Current tier.
    pub tier: u32,
    /// Under the urgent procedure (terms in hours).
    pub urgent: bool,
    /// End of the current term, while it runs.
    pub deadline: Option<SystemTime>,
    /// Whether the process director was alerted that the current term passed.
    pub term_alerted: bool,
    /// The planned meeting.
    pub meeting_at: Option<SystemTime>,
    /// When the registrant confirms the solution.
    pub follow_up_at: Option<SystemTime>,
    /// Whether the follow-up reminder went out.
    pub follow_up_reminded: bool,
    /// Transitions so far (the sequence number of the last event).
    pub sequence: u64,
}

impl Escalation {
    /// A new registration at `tier`.
    pub fn registered(tier: u32, urgent: bool) -> Self {
        Self {
            state: State::Registered,
            tier,
            urgent,
            deadline: None,
            term_alerted: false,
            meeting_at: None,
            follow_up_at: None,
            follow_up_reminded: false,
            sequence: 0,
        }
    }

    /// The next moment the scheduler must look at this escalation, if any.
    pub fn next_due(&self) -> Option<SystemTime> {
        if self.state.term_runs() && !self.term_alerted {
            self.deadline
        } else if self.state.following_up() && !self.follow_up_reminded {
            self.follow_up_at
        } else {
            None
        }
    }
}

/// Something that happens to an escalation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The coordinator accepted the registration (after checking registrant and history).
    Accept,
    /// The coordinator refused it.
    Reject,
    /// Participants were resolved from the members' mandates.
    ResolveParticipants,
    /// The organiser planned the meeting.
    PlanMeeting {
        /// When it is.
        at: SystemTime,
    },
    /// The table decided (with commitments, kept by the coordinator).
    Decide,
    /// A person moves the case up to `to`.
    Escalate {
        /// Target tier.
        to: u32,
    },
    /// A person moves the case down to `to`, or to the regular table (`None`) with advice.
    ScaleDown {
        /// Target tier, or the regular table.
        to: Option<u32>,
    },
    /// The scheduler: the current term's deadline passed.
    DeadlinePassed,
    /// The scheduler: the follow-up date came.
    FollowUpDue,
    /// The registrant's answer at follow-up.
    ConfirmFollowUp {
        /// The solution happened.
        solved: bool,
    },
    /// Reopen a closed case.
    Reopen,
}

impl Event {
    /// The event's name in refusals.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::ResolveParticipants => "resolve participants",
            Self::PlanMeeting { .. } => "plan a meeting",
            Self::Decide => "record a decision",
            Self::Escalate { .. } => "escalate",
            Self::ScaleDown { .. } => "scale down",
            Self::DeadlinePassed => "deadline passed",
            Self::FollowUpDue => "follow-up due",
            Self::ConfirmFollowUp { .. } => "confirm the follow-up",
            Self::Reopen => "reopen",
        }
    }
}

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The event does not apply in this state.
    #[error("cannot {event} an escalation that is {state}")]
    WrongState {
        /// Current state.
        state: State,
        /// The event.
        event: &'static str,
    },
    /// The target tier is not on the ladder.
    #[error("tier {0} is not on the region's ladder")]
    NoSuchTier(u32),
    /// Up more than one step without the ladder allowing the skip.
    #[error(
        "tier {to} may not follow tier {from} (one step at a time unless the ladder allows a skip)"
    )]
    NotOneStepUp {
        /// From.
        from: u32,
        /// To.
        to: u32,
    },
    /// Down to a tier that is not the one below.
    #[error("a case scales down one tier at a time, from {from} to {}", from.saturating_sub(1))]
    NotOneStepDown {
        /// From.
        from: u32,
        /// Asked for.
        to: u32,
    },
    /// The meeting is not within the term.
    #[error("the meeting must be between now and the end of the term")]
    MeetingOutsideTerm,
    /// A scheduler event that is not due yet.
    #[error("not due yet")]
    NotDue,
}

/// A transition's result: the escalation after it and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The escalation after the event.
    pub escalation: Escalation,
    /// What happened (for notifications and the audit log).
    pub happened: Happened,
    /// Tier before the event.
    pub from_tier: u32,
}

fn at_tier(
    esc: &Escalation,
    ladder: &RegionLadder,
    tier: u32,
    now: SystemTime,
) -> Result<Escalation, Refused> {
    let deadline = ladder
        .deadline(tier, esc.urgent, now)
        .ok_or(Refused::NoSuchTier(tier))?;
    Ok(Escalation {
        state: State::Accepted,
        tier,
        deadline: Some(deadline),
        term_alerted: false,
        meeting_at: None,
        follow_up_at: None,
        follow_up_reminded: false,
        ..esc.clone()
    })
}

/// Applies `event` to `esc` at `now` under `ladder`.
pub fn apply(
    esc: &Escalation,
    ladder: &RegionLadder,
    event: &Event,
    now: SystemTime,
) -> Result<Transition, Refused> {
    use State as S;
    let wrong = || Refused::WrongState {
        state: esc.state,
        event: event.name(),
    };
    let (next, happened) = match (esc.state, event) {
        (S::Registered, Event::Accept) => {
            (at_tier(esc, ladder, esc.tier, now)?, Happened::Accepted)
        }
        (S::Registered, Event::Reject) => (
            Escalation {
                state: S::Rejected,
                ..esc.clone()
            },
            Happened::Rejected,
        ),
        (S::Accepted, Event::ResolveParticipants) => (
            Escalation {
                state: S::ParticipantsResolved,
                ..esc.clone()
            },
            Happened::ParticipantsResolved,
        ),
        (S::ParticipantsResolved | S::MeetingPlanned, Event::PlanMeeting { at }) => {
            if *at < now || esc.deadline.is_some_and(|d| *at > d) {
                return Err(Refused::MeetingOutsideTerm);
            }
            (
                Escalation {
                    state: S::MeetingPlanned,
                    meeting_at: Some(*at),
                    ..esc.clone()
                },
                Happened::MeetingPlanned,
            )
        }
        (S::MeetingPlanned, Event::Decide) => {
            let follow_up = ladder
                .tier(esc.tier)
                .and_then(|t| {
                    ladder
                        .calendar()
                        .due(
                            now,
                            crate::calendar::Term::WorkingDays(t.follow_up_working_days),
                        )
                        .ok()
                })
                .ok_or(Refused::NoSuchTier(esc.tier))?;
            (
                Escalation {
                    state: S::Decided,
                    deadline: None,
                    term_alerted: false,
                    follow_up_at: Some(follow_up),
                    follow_up_reminded: false,
                    ..esc.clone()
                },
                Happened::Decided,
            )
        }
        (s, Event::Escalate { to }) if s.term_runs() => {
            if ladder.tier(*to).is_none() {
                return Err(Refused::NoSuchTier(*to));
            }
            if *to <= esc.tier || !ladder.may_move_up(esc.tier, *to) {
                return Err(Refused::NotOneStepUp {
                    from: esc.tier,
                    to: *to,
                });
            }
            (at_tier(esc, ladder, *to, now)?, Happened::Escalated)
        }
        (s, Event::ScaleDown { to: Some(to) }) if s.term_runs() || s.following_up() => {
            if *to + 1 != esc.tier || *to == 0 {
                return Err(Refused::NotOneStepDown {
                    from: esc.tier,
                    to: *to,
                });
            }
            (at_tier(esc, ladder, *to, now)?, Happened::ScaledDown)
        }
        (s, Event::ScaleDown { to: None }) if s.term_runs() => (
            Escalation {
                state: S::Closed,
                deadline: None,
                ..esc.clone()
            },
            Happened::Closed,
        ),
        (S::Decided, Event::ScaleDown { to: None }) => (
            Escalation {
                state: S::Monitoring,
                ..esc.clone()
            },
            Happened::Monitoring,
        ),
        (s, Event::DeadlinePassed) if s.term_runs() && !esc.term_alerted => {
            if esc.deadline.is_none_or(|d| now < d) {
                return Err(Refused::NotDue);
            }
            let on = ladder
                .tier(esc.tier)
                .map(|t| t.on_term_passed)
                .ok_or(Refused::NoSuchTier(esc.tier))?;
            match on {
                OnTermPassed::Escalate if esc.tier < ladder.top() => (
                    at_tier(esc, ladder, esc.tier + 1, now)?,
                    Happened::Escalated,
                ),
                _ => (
                    Escalation {
                        term_alerted: true,
                        ..esc.clone()
                    },
                    Happened::TermPassedAlert,
                ),
            }
        }
        (s, Event::FollowUpDue) if s.following_up() && !esc.follow_up_reminded => {
            if esc.follow_up_at.is_none_or(|d| now < d) {
                return Err(Refused::NotDue);
            }
            (
                Escalation {
                    follow_up_reminded: true,
                    ..esc.clone()
                },
                Happened::FollowUpDue,
            )
        }
        (s, Event::ConfirmFollowUp { solved: true }) if s.following_up() => (
            Escalation {
                state: S::Closed,
                ..esc.clone()
            },
            Happened::Closed,
        ),
        (s, Event::ConfirmFollowUp { solved: false }) if s.following_up() => {
            (reopened(esc, ladder, now)?, Happened::Reopened)
        }
        (S::Closed, Event::Reopen) => (reopened(esc, ladder, now)?, Happened::Reopened),
        _ => return Err(wrong()),
    };
    Ok(Transition {
        escalation: Escalation {
            sequence: esc.sequence + 1,
            ..next
        },
        happened,
        from_tier: esc.tier,
    })
}

fn reopened(
    esc: &Escalation,
    ladder: &RegionLadder,
    now: SystemTime,
) -> Result<Escalation, Refused> {
    let tier = ladder
        .tier(esc.tier)
        .and_then(|t| t.reopen_at)
        .unwrap_or(esc.tier);
    at_tier(esc, ladder, tier, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ladder::tests::ladder;
    use proptest::prelude::*;
    use std::time::Duration;

    fn now() -> SystemTime {
        // Wednesday 2 December 2026, 10:00 CET.
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_202_000)
    }

    fn run(esc: &Escalation, events: &[Event], at: SystemTime) -> Result<Escalation, Refused> {
        let l = ladder();
        let mut e = esc.clone();
        for ev in events {
            e = apply(&e, &l, ev, at)?.escalation;
        }
        Ok(e)
    }

    #[test]
    fn the_happy_path_ends_closed_with_a_deadline_on_the_way() {
        let l = ladder();
        let e = Escalation::registered(3, true);
        let accepted = apply(&e, &l, &Event::Accept, now()).unwrap().escalation;
        assert_eq!(accepted.state, State::Accepted);
        // Urgent at tier 3: 24 elapsed hours.
        assert_eq!(
            accepted.deadline,
            Some(now() + Duration::from_secs(24 * 3600))
        );
        let meeting = now() + Duration::from_secs(3600);
        let e = run(
            &accepted,
            &[
                Event::ResolveParticipants,
                Event::PlanMeeting { at: meeting },
                Event::Decide,
            ],
            now(),
        )
        .unwrap();
        assert_eq!(e.state, State::Decided);
        assert!(e.follow_up_at.is_some() && e.deadline.is_none());
        let e = run(
            &e,
            &[
                Event::ScaleDown { to: None },
                Event::ConfirmFollowUp { solved: true },
            ],
            now(),
        )
        .unwrap();
        assert_eq!((e.state, e.sequence), (State::Closed, 6));
    }

    #[test]
    fn refusals_are_typed() {
        let l = ladder();
        let accepted = run(&Escalation::registered(1, false), &[Event::Accept], now()).unwrap();
        assert_eq!(
            apply(&accepted, &l, &Event::Decide, now()).unwrap_err(),
            Refused::WrongState {
                state: State::Accepted,
                event: "record a decision"
            }
        );
        assert_eq!(
            apply(&accepted, &l, &Event::Escalate { to: 4 }, now()).unwrap_err(),
            Refused::NotOneStepUp { from: 1, to: 4 }
        );
        assert!(apply(&accepted, &l, &Event::Escalate { to: 3 }, now()).is_ok());
        assert_eq!(
            apply(&accepted, &l, &Event::DeadlinePassed, now()).unwrap_err(),
            Refused::NotDue
        );
        let resolved = run(&accepted, &[Event::ResolveParticipants], now()).unwrap();
        let late = accepted.deadline.unwrap() + Duration::from_secs(1);
        assert_eq!(
            apply(&resolved, &l, &Event::PlanMeeting { at: late }, now()).unwrap_err(),
            Refused::MeetingOutsideTerm
        );
    }

    #[test]
    fn a_passed_term_escalates_or_alerts_as_the_ladder_says() {
        let l = ladder();
        let e = run(&Escalation::registered(1, false), &[Event::Accept], now()).unwrap();
        let after = e.deadline.unwrap();
        let t = apply(&e, &l, &Event::DeadlinePassed, after).unwrap();
        assert_eq!(
            (t.happened, t.escalation.tier, t.escalation.state),
            (Happened::Escalated, 2, State::Accepted)
        );
        assert!(t.escalation.deadline.unwrap() > after);
        // Tier 3 alerts, once.
        let e = run(&Escalation::registered(3, false), &[Event::Accept], now()).unwrap();
        let after = e.deadline.unwrap();
        let t = apply(&e, &l, &Event::DeadlinePassed, after).unwrap();
        assert_eq!(
            (t.happened, t.escalation.tier),
            (Happened::TermPassedAlert, 3)
        );
        assert_eq!(t.escalation.next_due(), None);
        assert!(apply(&t.escalation, &l, &Event::DeadlinePassed, after).is_err());
    }

    #[test]
    fn a_failed_follow_up_reopens_at_the_ladders_tier() {
        let e = run(
            &Escalation::registered(3, true),
            &[
                Event::Accept,
                Event::ResolveParticipants,
                Event::PlanMeeting { at: now() },
                Event::Decide,
                Event::ConfirmFollowUp { solved: false },
            ],
            now(),
        )
        .unwrap();
        assert_eq!((e.state, e.tier), (State::Accepted, 3));
        assert!(e.deadline.is_some());
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Accept),
            Just(Event::Reject),
            Just(Event::ResolveParticipants),
            (0u64..30 * 24).prop_map(|h| Event::PlanMeeting {
                at: now() + Duration::from_secs(h * 3600)
            }),
            Just(Event::Decide),
            (0u32..6).prop_map(|to| Event::Escalate { to }),
            proptest::option::of(0u32..6).prop_map(|to| Event::ScaleDown { to }),
            Just(Event::DeadlinePassed),
            Just(Event::FollowUpDue),
            any::<bool>().prop_map(|solved| Event::ConfirmFollowUp { solved }),
            Just(Event::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn invariants_hold_along_any_sequence(
            tier in 1u32..=4,
            urgent in any::<bool>(),
            steps in proptest::collection::vec((event(), 0u64..60 * 24), 1..40),
        ) {
            let l = ladder();
            let mut e = Escalation::registered(tier, urgent);
            let mut t = now();
            for (ev, minutes) in steps {
                t += Duration::from_secs(minutes * 60);
                let before = e.clone();
                match apply(&before, &l, &ev, t) {
                    Ok(tr) => {
                        let after = tr.escalation;
                        // Nothing leaves closed but a reopen; nothing leaves rejected.
                        if before.state == State::Closed {
                            prop_assert_eq!(&ev, &Event::Reopen);
                        }
                        prop_assert_ne!(before.state, State::Rejected);
                        // One step at a time, unless the ladder allows the skip or names the
                        // tier to reopen at.
                        if after.tier > before.tier {
                            prop_assert!(l.may_move_up(before.tier, after.tier));
                        } else if after.tier < before.tier {
                            let reopen = matches!(ev, Event::Reopen | Event::ConfirmFollowUp { solved: false });
                            prop_assert!(after.tier + 1 == before.tier || reopen);
                        }
                        // Every accepted escalation whose term runs has a deadline after the
                        // moment it was set; a decision has a follow-up date.
                        if after.state.term_runs() {
                            prop_assert!(after.deadline.is_some());
                            if after.tier != before.tier || !before.state.term_runs() {
                                prop_assert!(after.deadline.unwrap() > t);
                            }
                        }
                        if after.state.following_up() {
                            prop_assert!(after.follow_up_at.is_some());
                        }
                        prop_assert_eq!(after.sequence, before.sequence + 1);
                        prop_assert!(after.tier >= 1 && after.tier <= l.top());
                        e = after;
                    }
                    Err(_) => prop_assert_eq!(&e, &before),
                }
            }
        }
    }
}
