//! Conversions between the REST resources and the gRPC messages: timestamps as RFC 3339 strings,
//! enums as lower-case words, and the errors naming the JSON field.

use prost_types::Timestamp;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::Problem;

/// A protobuf timestamp as RFC 3339 (UTC); `None` when unset.
pub(crate) fn time_out(ts: Option<Timestamp>) -> Option<String> {
    let ts = ts?;
    let at = OffsetDateTime::from_unix_timestamp(ts.seconds).ok()?
        + time::Duration::nanoseconds(i64::from(ts.nanos));
    at.format(&Rfc3339).ok()
}

/// An RFC 3339 string from field `field` as a protobuf timestamp.
pub(crate) fn time_in(field: &str, value: &str) -> Result<Timestamp, Problem> {
    let at = OffsetDateTime::parse(value, &Rfc3339)
        .map_err(|_| Problem::invalid(field, "must be an RFC 3339 date-time with an offset"))?;
    let nanos = at.unix_timestamp_nanos();
    Ok(Timestamp {
        seconds: nanos.div_euclid(1_000_000_000) as i64,
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    })
}

/// An optional RFC 3339 string as an optional timestamp.
pub(crate) fn opt_time_in(field: &str, value: Option<&str>) -> Result<Option<Timestamp>, Problem> {
    value.map(|v| time_in(field, v)).transpose()
}

/// Defines a REST enum mapped one to one to the protobuf enum of the same variant names; in JSON
/// (and in the OpenAPI document, which reads the same serde attribute) each variant is its name in
/// snake_case. The protobuf's `UNSPECIFIED` becomes `None` on the way out and is never accepted on
/// the way in.
macro_rules! rest_enum {
    ($(#[$doc:meta])* $name:ident => $proto:ty { $($variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $(
                #[allow(missing_docs)]
                $variant,
            )+
        }

        impl $name {
            /// From the protobuf value; `None` for unspecified or unknown values.
            pub fn from_proto(value: i32) -> Option<Self> {
                match <$proto>::try_from(value).ok()? {
                    $(<$proto>::$variant => Some(Self::$variant),)+
                    _ => None,
                }
            }

            /// To the protobuf value.
            pub fn to_proto(self) -> $proto {
                match self {
                    $(Self::$variant => <$proto>::$variant,)+
                }
            }
        }
    };
}
pub(crate) use rest_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_name_the_field_when_bad() {
        let ts = time_in("at", "2026-12-02T10:15:30.5+01:00").unwrap();
        assert_eq!(time_out(Some(ts)).unwrap(), "2026-12-02T09:15:30.5Z");
        let err = time_in("meeting.at", "tomorrow").unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.detail.starts_with("meeting.at:"), "{}", err.detail);
        assert_eq!(time_out(None), None);
    }
}
