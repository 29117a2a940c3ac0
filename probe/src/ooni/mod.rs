//! OONI's data format: the base envelope, the test templates, and `web_connectivity`.

/// `Deserialize` for a struct whose unknown keys are kept in `extra: Map<String, Value>`.
///
/// `#[serde(flatten)]` would do the same, but it makes serde buffer the whole object, every
/// nested value included, before building the struct: on the top-level measurement and its
/// `test_keys` that doubled the aggregator's parse time. This visits the keys once instead.
/// `required` fields are an error when missing, as serde's derive makes them; `optional`
/// ones (serde's `Option` and `#[serde(default)]` fields) take their default.
macro_rules! deserialize_with_extra {
    (
        $ty:ident $(<$g:ident>)?,
        required: [$($req:ident),* $(,)?],
        optional: [$($opt:ident),* $(,)?] $(,)?
    ) => {
        impl<'de $(, $g: serde::Deserialize<'de>)?> serde::Deserialize<'de> for $ty $(<$g>)? {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V $(<$g>)? (std::marker::PhantomData<($($g,)?)>);
                impl<'de $(, $g: serde::Deserialize<'de>)?> serde::de::Visitor<'de> for V $(<$g>)? {
                    type Value = $ty $(<$g>)?;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str(concat!("a ", stringify!($ty), " object"))
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<Self::Value, A::Error> {
                        $(let mut $req = None;)*
                        $(let mut $opt = None;)*
                        let mut extra = serde_json::Map::new();
                        while let Some(key) = map.next_key::<String>()? {
                            match key.as_str() {
                                $(stringify!($req) => {
                                    if $req.is_some() {
                                        return Err(serde::de::Error::duplicate_field(stringify!($req)));
                                    }
                                    $req = Some(map.next_value()?);
                                })*
                                $(stringify!($opt) => {
                                    if $opt.is_some() {
                                        return Err(serde::de::Error::duplicate_field(stringify!($opt)));
                                    }
                                    $opt = Some(map.next_value()?);
                                })*
                                _ => {
                                    let value: serde_json::Value = map.next_value()?;
                                    extra.insert(key, value);
                                }
                            }
                        }
                        Ok($ty {
                            $($req: $req.ok_or_else(|| serde::de::Error::missing_field(stringify!($req)))?,)*
                            $($opt: $opt.unwrap_or_default(),)*
                            extra,
                        })
                    }
                }
                d.deserialize_map(V(std::marker::PhantomData))
            }
        }
    };
}

mod base;
mod templates;
mod web_connectivity;

pub use base::{
    Asn, CountryCode, DATA_FORMAT_VERSION, FieldError, Measurement, SCRUBBED_PROBE_IP,
    default_annotations, ooni_timestamp,
};
pub use templates::{
    BinaryData, DnsAnswer, DnsQuery, HttpRequest, HttpResponse, HttpTransaction, MaybeBinary,
    TcpConnect, TcpStatus, TlsHandshake, Transfer,
};
pub use web_connectivity::{
    Blocking, ControlDns, ControlHttpRequest, ControlRequest, ControlResponse, ControlTcpConnect,
    ControlTlsHandshake, IpInfo, TEST_NAME as WEB_CONNECTIVITY,
    TEST_VERSION as WEB_CONNECTIVITY_VERSION, WebConnectivityTestKeys,
};

/// A `web_connectivity` measurement.
pub type WebConnectivityMeasurement = Measurement<WebConnectivityTestKeys>;
