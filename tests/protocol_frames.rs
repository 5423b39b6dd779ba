//! Property tests of the client protocol's frames: every variant of
//! [`ClientFrame`] and [`ServerFrame`] survives encode → decode; damaged
//! bytes (random, truncated, extended, flipped) give a typed error, never a
//! panic and never a different frame that claims the whole input.

use cql_lite::{DataType, MarkerType, Value};
use proptest::prelude::*;
use ringdb::client::protocol::{
    decode_body, decode_frame, encode_frame, BatchEntry, BatchKind, BatchStatement, ClientFrame,
    FrameError, KeyspaceDescription, ProtocolError, ProtocolErrorCode, RepairRequest,
    SchemaSnapshot, ServerFrame, TableDescription, WireError, MAX_FRAME_LEN,
};
use ringdb::model::{Consistency, Dot, DotSet, NodeId};
use ringdb::query::api::{
    ColumnSpec, MarkerSpec, PagingState, Prepared, QueryError, QueryOptions, QueryResult, Response,
    ResultSet, Row,
};

fn single_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i32>().prop_map(Value::Int),
        any::<i64>().prop_map(Value::BigInt),
        any::<i16>().prop_map(Value::SmallInt),
        any::<f32>().prop_map(Value::Float),
        any::<f64>().prop_map(Value::Double),
        any::<bool>().prop_map(Value::Boolean),
        ".{0,12}".prop_map(Value::Text),
        "[ -~]{0,12}".prop_map(Value::Ascii),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(Value::Blob),
        any::<i64>().prop_map(Value::Timestamp),
        any::<i32>().prop_map(Value::Date),
        any::<u128>().prop_map(Value::Uuid),
        any::<u128>().prop_map(Value::TimeUuid),
    ]
}

/// A single value, or a list of them (what `IN ?` takes).
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => single_value(),
        1 => prop::collection::vec(single_value(), 0..4).prop_map(Value::List),
    ]
}

fn values() -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(value(), 0..6)
}

fn consistency() -> impl Strategy<Value = Consistency> {
    prop_oneof![
        Just(Consistency::Any),
        Just(Consistency::One),
        Just(Consistency::Two),
        Just(Consistency::Three),
        Just(Consistency::Quorum),
        Just(Consistency::All),
        any::<u8>().prop_map(Consistency::Count),
    ]
}

fn dot_set() -> impl Strategy<Value = DotSet> {
    prop::collection::vec((0u64..4, 1u64..20), 0..8).prop_map(|dots| {
        let mut set = DotSet::new();
        for (node, counter) in dots {
            set.insert(Dot {
                node: NodeId(node),
                counter,
            });
        }
        set
    })
}

fn options() -> impl Strategy<Value = QueryOptions> {
    (
        consistency(),
        proptest::option::of(any::<u32>()),
        proptest::option::of(prop::collection::vec(any::<u8>(), 0..12)),
        proptest::option::of(dot_set()),
    )
        .prop_map(|(consistency, page_size, paging, context)| QueryOptions {
            consistency,
            page_size,
            paging_state: paging.map(PagingState),
            causal_context: context,
        })
}

fn data_type() -> impl Strategy<Value = DataType> {
    (0..DataType::ALL.len()).prop_map(|i| DataType::ALL[i])
}

fn column() -> impl Strategy<Value = ColumnSpec> {
    ("[a-z_]{1,8}", data_type()).prop_map(|(name, data_type)| ColumnSpec { name, data_type })
}

fn marker() -> impl Strategy<Value = MarkerSpec> {
    ("[a-z_()]{1,8}", data_type(), any::<bool>()).prop_map(|(name, data_type, list)| MarkerSpec {
        name,
        marker_type: if list {
            MarkerType::List(data_type)
        } else {
            MarkerType::Single(data_type)
        },
    })
}

fn query_error() -> impl Strategy<Value = QueryError> {
    prop_oneof![
        (".{0,20}", ".{0,40}")
            .prop_map(|(message, rendered)| QueryError::Syntax { message, rendered }),
        (".{0,20}", ".{0,40}")
            .prop_map(|(message, rendered)| QueryError::Invalid { message, rendered }),
        (consistency(), any::<usize>(), any::<usize>()).prop_map(
            |(consistency, required, alive)| {
                QueryError::Unavailable {
                    consistency,
                    required,
                    alive,
                }
            }
        ),
        (consistency(), any::<usize>(), any::<usize>(), any::<bool>()).prop_map(
            |(consistency, required, received, write)| QueryError::Timeout {
                consistency,
                required,
                received,
                write,
            }
        ),
        ".{0,20}".prop_map(QueryError::UnknownPrepared),
        ".{0,20}".prop_map(QueryError::Server),
        (
            consistency(),
            any::<usize>(),
            any::<usize>(),
            proptest::collection::vec(".{0,30}", 0..4),
            any::<bool>()
        )
            .prop_map(|(consistency, required, received, failures, write)| {
                QueryError::Failure {
                    consistency,
                    required,
                    received,
                    failures,
                    write,
                }
            }),
    ]
}

fn protocol_code() -> impl Strategy<Value = ProtocolErrorCode> {
    prop_oneof![
        Just(ProtocolErrorCode::Malformed),
        Just(ProtocolErrorCode::FrameTooLarge),
        Just(ProtocolErrorCode::Truncated),
        Just(ProtocolErrorCode::UnsupportedVersion),
        Just(ProtocolErrorCode::NotStarted),
        Just(ProtocolErrorCode::ResponseTooLarge),
        Just(ProtocolErrorCode::ReadTimeout),
        Just(ProtocolErrorCode::Internal),
    ]
}

fn row() -> impl Strategy<Value = Row> {
    (
        values(),
        any::<bool>(),
        prop::collection::vec(values(), 0..3),
    )
        .prop_map(|(values, conflict, siblings)| Row {
            values,
            conflict,
            siblings,
        })
}

fn response() -> impl Strategy<Value = Response> {
    let result = prop_oneof![
        Just(QueryResult::Void),
        "[a-z]{1,8}".prop_map(QueryResult::SetKeyspace),
        ".{0,30}".prop_map(|description| QueryResult::SchemaChange { description }),
        (
            prop::collection::vec(column(), 0..4),
            prop::collection::vec(row(), 0..4),
            proptest::option::of(prop::collection::vec(any::<u8>(), 0..8)),
            proptest::option::of(dot_set()),
        )
            .prop_map(
                |(columns, rows, paging, context)| QueryResult::Rows(ResultSet {
                    columns: columns.into(),
                    rows,
                    paging_state: paging.map(PagingState),
                    causal_context: context,
                })
            ),
    ];
    (result, prop::collection::vec(".{0,20}", 0..3))
        .prop_map(|(result, warnings)| Response { result, warnings })
}

fn schema() -> impl Strategy<Value = SchemaSnapshot> {
    let table = (
        "[a-z]{1,8}",
        prop::collection::vec(column(), 0..4),
        ".{0,40}",
    )
        .prop_map(|(name, columns, create_statement)| TableDescription {
            name,
            columns,
            create_statement,
        });
    let keyspace = ("[a-z]{1,8}", ".{0,40}", prop::collection::vec(table, 0..3)).prop_map(
        |(name, create_statement, tables)| KeyspaceDescription {
            name,
            create_statement,
            tables,
        },
    );
    prop::collection::vec(keyspace, 0..3).prop_map(|keyspaces| SchemaSnapshot { keyspaces })
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    let entry = (
        prop_oneof![
            ".{0,30}".prop_map(BatchStatement::Text),
            prop::collection::vec(any::<u8>(), 0..16).prop_map(BatchStatement::Prepared),
        ],
        values(),
    )
        .prop_map(|(statement, values)| BatchEntry { statement, values });
    prop_oneof![
        (any::<u16>(), proptest::option::of("[a-z]{1,8}")).prop_map(
            |(protocol_version, keyspace)| {
                ClientFrame::Startup {
                    protocol_version,
                    keyspace,
                }
            }
        ),
        (".{0,40}", values(), options()).prop_map(|(text, values, options)| ClientFrame::Query {
            text,
            values,
            options
        }),
        ".{0,40}".prop_map(|text| ClientFrame::Prepare { text }),
        (
            prop::collection::vec(any::<u8>(), 0..16),
            values(),
            options()
        )
            .prop_map(|(id, values, options)| ClientFrame::Execute {
                id,
                values,
                options
            }),
        (
            prop_oneof![Just(BatchKind::Logged), Just(BatchKind::Unlogged)],
            prop::collection::vec(entry, 0..4),
            options()
        )
            .prop_map(|(kind, statements, options)| ClientFrame::Batch {
                kind,
                statements,
                options
            }),
        Just(ClientFrame::DescribeSchema),
        Just(ClientFrame::AdminStatus),
        Just(ClientFrame::AdminDecommission),
        Just(ClientFrame::AdminFlush),
        Just(ClientFrame::AdminCompact),
        (
            proptest::option::of("[a-z_]{1,12}"),
            proptest::option::of("[a-z_]{1,12}"),
            any::<bool>()
        )
            .prop_map(|(keyspace, table, primary_range)| {
                ClientFrame::AdminRepair(RepairRequest {
                    keyspace,
                    table,
                    primary_range,
                })
            }),
        (
            proptest::option::of("[a-z_]{1,12}"),
            proptest::option::of("[a-z_]{1,12}")
        )
            .prop_map(|(keyspace, table)| ClientFrame::AdminCleanup { keyspace, table }),
        any::<u64>().prop_map(|node| ClientFrame::AdminRemoveNode { node }),
        any::<u64>().prop_map(|mib_per_sec| ClientFrame::AdminSetStreamThroughput { mib_per_sec }),
    ]
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    prop_oneof![
        (any::<u16>(), proptest::option::of("[a-z]{1,8}")).prop_map(
            |(protocol_version, keyspace)| {
                ServerFrame::Ready {
                    protocol_version,
                    keyspace,
                }
            }
        ),
        response().prop_map(ServerFrame::Result),
        (
            prop::collection::vec(any::<u8>(), 0..16),
            prop::collection::vec(marker(), 0..3),
            prop::collection::vec(column(), 0..3)
        )
            .prop_map(|(id, bind_markers, result_columns)| ServerFrame::Prepared(
                Prepared {
                    id,
                    bind_markers,
                    result_columns
                }
            )),
        schema().prop_map(ServerFrame::Schema),
        ".{0,40}".prop_map(ServerFrame::AdminText),
        query_error().prop_map(|e| ServerFrame::Error(WireError::Query(e))),
        (protocol_code(), ".{0,30}").prop_map(|(code, message)| ServerFrame::Error(
            WireError::Protocol(ProtocolError { code, message })
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn client_frames_round_trip(frame in client_frame()) {
        let bytes = encode_frame(&frame).expect("encodes");
        prop_assert_eq!(decode_frame::<ClientFrame>(&bytes).expect("decodes"), frame);
    }

    #[test]
    fn server_frames_round_trip(frame in server_frame()) {
        let bytes = encode_frame(&frame).expect("encodes");
        prop_assert_eq!(decode_frame::<ServerFrame>(&bytes).expect("decodes"), frame);
    }

    #[test]
    fn truncated_and_extended_frames_are_refused(frame in client_frame(), cut in any::<prop::sample::Index>(), extra in 1usize..8) {
        let bytes = encode_frame(&frame).expect("encodes");
        let cut = cut.index(bytes.len());
        prop_assert!(decode_frame::<ClientFrame>(&bytes[..cut]).is_err());
        let mut longer = bytes.clone();
        longer.extend(std::iter::repeat_n(0u8, extra));
        prop_assert!(decode_frame::<ClientFrame>(&longer).is_err());
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_frame::<ClientFrame>(&bytes);
        let _ = decode_frame::<ServerFrame>(&bytes);
        // With a correct length prefix too, so the body decoder sees them.
        let mut framed = (bytes.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        let _ = decode_frame::<ClientFrame>(&framed);
        let _ = decode_frame::<ServerFrame>(&framed);
    }

    #[test]
    fn flipped_bytes_never_panic(frame in client_frame(), at in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let mut bytes = encode_frame(&frame).expect("encodes");
        let at = at.index(bytes.len());
        bytes[at] ^= mask;
        let _ = decode_frame::<ClientFrame>(&bytes);
    }
}

#[test]
fn oversized_prefix_is_refused_without_reading() {
    let mut bytes = (MAX_FRAME_LEN + 1).to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0; 16]);
    assert!(matches!(
        decode_frame::<ClientFrame>(&bytes),
        Err(FrameError::TooLarge(_))
    ));
}

/// A list inside a list is no value: it does not decode, however deep the
/// nesting (a hostile frame nesting a million lists must not overflow the
/// server's stack), and a flat list still does.
#[test]
fn nested_lists_do_not_decode() {
    let frame = ClientFrame::Query {
        text: "q".into(),
        values: vec![Value::List(vec![Value::Null])],
        options: QueryOptions::default(),
    };
    let body = ringdb::client::protocol::encode_body(&frame).expect("encodes");
    let flat = decode_body::<ClientFrame>(&body).expect("a flat list decodes");
    assert_eq!(flat, frame);
    // The list is variant 14 with one element, Null (variant 0).
    let list_of_null = [14u8, 1, 0];
    let at = body
        .windows(list_of_null.len())
        .position(|w| w == list_of_null)
        .expect("the list's bytes");
    for depth in [2usize, 1_000_000] {
        let mut nested = body[..at].to_vec();
        for _ in 0..depth {
            nested.extend_from_slice(&[14, 1]);
        }
        nested.push(0);
        nested.extend_from_slice(&body[at + list_of_null.len()..]);
        let got = decode_body::<ClientFrame>(&nested);
        assert!(
            matches!(got, Err(FrameError::Malformed(_))),
            "depth {depth}: {got:?}"
        );
    }
}
