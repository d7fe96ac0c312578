//! Reading the Prometheus text a service serves on its admin listener's `/metrics`, for tests and
//! benches: one parser instead of a `lines().find(...)` in every file.

use std::net::SocketAddr;

/// Fetches `/metrics` from the admin listener at `addr` (the raw HTTP answer; the samples are its
/// lines).
pub async fn scrape(addr: SocketAddr) -> String {
    crate::mesh::http_get(addr, "/metrics").await
}

/// The value of exactly `series`: a metric name with its labels as served, e.g.
/// `doorzet_node_peer_checkpoints_total{result="ok"}` (a trailing space is ignored).
pub fn value(text: &str, series: &str) -> Option<f64> {
    let series = series.trim_end();
    let (name, labels) = series.split_at(series.find('{').unwrap_or(series.len()));
    samples(text, name).find_map(|(l, v)| (l == labels).then_some(v))
}

/// Every sample of the metric `name`: its labels (`{...}`, empty when it has none) and value.
pub fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = if rest.starts_with('{') {
            let end = rest.find("} ")?;
            (&rest[..=end], &rest[end + 2..])
        } else {
            ("", rest.strip_prefix(' ')?)
        };
        Some((labels, value.trim().parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "HTTP/1.1 200 OK\r\n\r\n\
        # TYPE a_total counter\n\
        a_total 3\n\
        a_total_extra 9\n\
        b{x=\"1\",y=\"two words\"} 4.5\n\
        b{x=\"2\"} 1\n\
        b_bucket{le=\"+Inf\"} 7\n";

    #[test]
    fn a_series_is_matched_whole_with_its_labels() {
        assert_eq!(value(TEXT, "a_total"), Some(3.0));
        assert_eq!(value(TEXT, "a_total "), Some(3.0));
        assert_eq!(value(TEXT, "b{x=\"2\"}"), Some(1.0));
        assert_eq!(value(TEXT, "b{x=\"3\"}"), None);
        assert_eq!(value(TEXT, "a_tot"), None);
    }

    #[test]
    fn samples_list_one_metric_with_its_labels() {
        let b: Vec<_> = samples(TEXT, "b").collect();
        assert_eq!(b, [("{x=\"1\",y=\"two words\"}", 4.5), ("{x=\"2\"}", 1.0)]);
        assert_eq!(samples(TEXT, "a_total").collect::<Vec<_>>(), [("", 3.0)]);
        // A histogram's last bound, as the benches read it.
        assert_eq!("+Inf".parse::<f64>(), Ok(f64::INFINITY));
    }
}
