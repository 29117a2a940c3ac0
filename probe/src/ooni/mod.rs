//! OONI's data format: the base envelope, the test templates, and `web_connectivity`.

mod base;
mod templates;
mod web_connectivity;

pub use base::{
    Asn, CountryCode, DATA_FORMAT_VERSION, FieldError, Measurement, SCRUBBED_PROBE_IP,
    default_annotations, ooni_timestamp,
};
pub use templates::{
    BinaryData, DnsAnswer, DnsQuery, HttpRequest, HttpResponse, HttpTransaction, MaybeBinary,
    TcpConnect, TcpStatus, TlsHandshake,
};
pub use web_connectivity::{
    Blocking, ControlDns, ControlHttpRequest, ControlRequest, ControlResponse, ControlTcpConnect,
    ControlTlsHandshake, IpInfo, TEST_NAME as WEB_CONNECTIVITY,
    TEST_VERSION as WEB_CONNECTIVITY_VERSION, WebConnectivityTestKeys,
};

/// A `web_connectivity` measurement.
pub type WebConnectivityMeasurement = Measurement<WebConnectivityTestKeys>;
