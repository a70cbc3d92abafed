//! Queries in, decisions out: the bytes each answer carries, parsed back.

use super::*;
use hickory_proto::rr::Name;

const VRF: u16 = 3;
const VM: Ipv4Addr = Ipv4Addr::new(10, 20, 1, 10);

fn service(rate: u32) -> DnsService<u32> {
    let mut s = DnsService::new(DnsSettings {
        rate,
        burst: rate,
        ..DnsSettings::default()
    });
    let zone = Zone::new(
        "cs2cloud.internal",
        &[
            ("web-1".into(), VM),
            ("i-2-10-VM".into(), VM),
            ("i-2-11-VM".into(), Ipv4Addr::new(10, 20, 1, 11)),
        ],
    )
    .expect("zone");
    s.set_zone(VRF, Some(zone));
    s
}

fn query(id: u16, name: &str, qt: RecordType) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), qt));
    m.to_vec().expect("encode")
}

fn ask(s: &mut DnsService<u32>, bytes: &[u8], now_ms: u64) -> Outcome {
    s.query(VRF, Ipv4Addr::new(10, 20, 1, 11), 7, bytes, now_ms)
}

fn answer(o: Outcome) -> (Message, Answered) {
    match o {
        Outcome::Answer(b, how) => (Message::from_vec(&b).expect("an answer parses"), how),
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[test]
fn a_vm_name_gets_an_authoritative_address_under_the_network_domain() {
    let mut s = service(0);
    for name in ["web-1.cs2cloud.internal.", "I-2-10-VM.cs2cloud.internal."] {
        let (m, how) = answer(ask(&mut s, &query(0x1234, name, RecordType::A), 0));
        assert_eq!(how, Answered::Local);
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(a_records(&m), vec![VM], "{name}");
        assert_eq!(m.queries[0].name.to_ascii(), name, "the question as asked");
    }
    assert_eq!(s.pending(), 0, "nothing forwarded");
}

#[test]
fn the_reverse_name_of_a_vm_address_points_at_its_name() {
    let mut s = service(0);
    let (m, _) = answer(ask(
        &mut s,
        &query(9, "10.1.20.10.in-addr.arpa.", RecordType::PTR),
        0,
    ));
    let targets: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::PTR(p) => Some(p.0.to_ascii()),
            _ => None,
        })
        .collect();
    assert_eq!(targets, ["web-1.cs2cloud.internal."]);
}

#[test]
fn an_unknown_name_in_the_domain_is_nxdomain_and_other_types_are_no_data() {
    let mut s = service(0);
    let (m, _) = answer(ask(
        &mut s,
        &query(1, "nope.cs2cloud.internal.", RecordType::A),
        0,
    ));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let (m, _) = answer(ask(
        &mut s,
        &query(2, "web-1.cs2cloud.internal.", RecordType::AAAA),
        0,
    ));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(s.pending(), 0);
}

fn upstream_answer(forwarded: &[u8], ttl: u32, addr: Ipv4Addr) -> Vec<u8> {
    let q = Message::from_vec(forwarded).expect("forwarded query parses");
    let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    m.add_query(q.queries[0].clone());
    m.add_answer(Record::from_rdata(
        q.queries[0].name.clone(),
        ttl,
        RData::A(A(addr)),
    ));
    m.to_vec().expect("encode")
}

#[test]
fn other_names_are_forwarded_answered_with_the_vms_id_and_then_served_from_the_cache() {
    let mut s = service(0);
    let q = query(0xbeef, "mirror.example.org.", RecordType::A);
    let Outcome::Forward(fwd) = ask(&mut s, &q, 0) else {
        panic!("expected a forward");
    };
    assert_ne!(fwd[..2], q[..2], "a fresh upstream id");
    assert_eq!(fwd[2..], q[2..], "the query otherwise as the VM sent it");
    let reply = upstream_answer(&fwd, 120, Ipv4Addr::new(192, 0, 2, 80));
    let (ctx, back) = s.upstream_reply(&reply, 10).expect("matches the query");
    assert_eq!(ctx, 7);
    let m = Message::from_vec(&back).expect("parses");
    assert_eq!(m.metadata.id, 0xbeef);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(192, 0, 2, 80)]);
    assert!(
        s.upstream_reply(&reply, 11).is_none(),
        "a second copy is dropped"
    );

    let (m, how) = answer(ask(
        &mut s,
        &query(0x0101, "MIRROR.example.org.", RecordType::A),
        30_010,
    ));
    assert_eq!(how, Answered::Cached);
    assert_eq!(m.metadata.id, 0x0101);
    assert_eq!(m.queries[0].name.to_ascii(), "MIRROR.example.org.");
    assert_eq!(m.answers[0].ttl, 90, "the TTL counts down while cached");
    assert_eq!(s.pending(), 0);
}

#[test]
fn an_upstream_reply_for_another_question_is_dropped_and_a_silent_upstream_gives_servfail() {
    let mut s = service(0);
    let Outcome::Forward(fwd) = ask(&mut s, &query(5, "a.example.", RecordType::A), 0) else {
        panic!("expected a forward");
    };
    let mut other = Message::from_vec(&upstream_answer(&fwd, 60, VM)).expect("parses");
    other.queries[0].name = Name::from_ascii("b.example.").expect("name");
    assert!(s
        .upstream_reply(&other.to_vec().expect("encode"), 1)
        .is_none());
    assert_eq!(s.pending(), 1);
    assert!(s.expire(1_999).is_empty());
    let late = s.expire(2_000);
    assert_eq!(late.len(), 1);
    let m = Message::from_vec(&late[0].1).expect("parses");
    assert_eq!(
        (m.metadata.id, m.metadata.response_code),
        (5, ResponseCode::ServFail)
    );
    assert_eq!(s.pending(), 0);
}

fn rcode(o: Outcome) -> ResponseCode {
    let (m, how) = answer(o);
    assert_eq!(how, Answered::Error(m.metadata.response_code));
    m.metadata.response_code
}

#[test]
fn bad_queries_get_formerr_refused_or_notimp_and_responses_are_never_answered() {
    let mut s = service(0);
    let good = query(0x4242, "web-1.cs2cloud.internal.", RecordType::A);
    // A question cut in the middle.
    let cut = &good[..good.len() - 3];
    assert_eq!(rcode(ask(&mut s, cut, 0)), ResponseCode::FormErr);
    // Header says two questions, one is there.
    let mut two = good.clone();
    two[5] = 2;
    assert_eq!(rcode(ask(&mut s, &two, 0)), ResponseCode::FormErr);
    // Oversized.
    let mut big = good.clone();
    big.resize(MAX_QUERY_LEN + 1, 0);
    assert_eq!(rcode(ask(&mut s, &big, 0)), ResponseCode::Refused);
    // Another class.
    let mut chaos = good.clone();
    let n = chaos.len();
    chaos[n - 1] = 3;
    assert_eq!(rcode(ask(&mut s, &chaos, 0)), ResponseCode::Refused);
    // Another opcode (STATUS).
    let mut status = good.clone();
    status[2] = (status[2] & 0x87) | (2 << 3);
    assert_eq!(rcode(ask(&mut s, &status, 0)), ResponseCode::NotImp);
    // A response, and less than a header.
    let mut resp = good.clone();
    resp[2] |= 0x80;
    assert_eq!(ask(&mut s, &resp, 0), Outcome::Dropped(Dropped::NotAQuery));
    assert_eq!(
        ask(&mut s, &good[..11], 0),
        Outcome::Dropped(Dropped::TooShort)
    );
    // The id is kept on errors.
    let (m, _) = answer(ask(&mut s, cut, 0));
    assert_eq!(m.metadata.id, 0x4242);
}

#[test]
fn a_vm_past_its_rate_gets_nothing_until_its_bucket_refills() {
    let mut s = service(5);
    let q = query(1, "web-1.cs2cloud.internal.", RecordType::A);
    let answered = (0..50)
        .filter(|_| matches!(ask(&mut s, &q, 0), Outcome::Answer(..)))
        .count();
    assert_eq!(answered, 5);
    assert_eq!(ask(&mut s, &q, 0), Outcome::Dropped(Dropped::RateLimited));
    assert!(matches!(ask(&mut s, &q, 1_000), Outcome::Answer(..)));
}

#[test]
fn a_big_answer_to_a_client_without_edns_is_truncated() {
    let mut s = DnsService::new(DnsSettings {
        rate: 0,
        ..DnsSettings::default()
    });
    let hosts: Vec<(String, Ipv4Addr)> = (0..60u8)
        .map(|i| ("many".to_string(), Ipv4Addr::new(10, 0, 0, i)))
        .collect();
    s.set_zone(VRF, Some(Zone::new("big.internal", &hosts).expect("zone")));
    let (m, _) = answer(ask(
        &mut s,
        &query(3, "many.big.internal.", RecordType::A),
        0,
    ));
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty());
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        let mut s = service(0);
        let _ = ask(&mut s, &bytes, 0);
        let _ = s.upstream_reply(&bytes, 0);
    }

    #[test]
    fn a_mutated_query_is_answered_or_dropped_never_panics(pos in 0usize..40, val: u8) {
        let mut s = service(0);
        let mut q = query(1, "web-1.cs2cloud.internal.", RecordType::A);
        if let Some(b) = q.get_mut(pos) {
            *b = val;
        }
        let _ = ask(&mut s, &q, 0);
    }
}
