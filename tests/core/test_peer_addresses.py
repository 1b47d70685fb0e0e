"""Core's one peer-address grammar (quinkgl.manifest.peers), which the manifest, `run` and the libp2p plugin share."""

from __future__ import annotations

import pytest

from quinkgl.manifest.peers import base58_decode, check_peer_id, parse_peer_address

ED25519_ID = "12D3KooWEtc2cssnh6jszy7FyXV59Vd2XZmKNguH3ZmBaV3BRhR6"  # identity multihash of an Ed25519 key
RSA_ID = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"  # sha2-256 multihash


@pytest.mark.parametrize(
    ("text", "host", "port", "peer", "protocol"),
    [
        ("192.168.1.5:7001", "192.168.1.5", 7001, None, "ip4"),
        ("localhost:7001", "localhost", 7001, None, "dns"),
        ("[::1]:7001", "::1", 7001, None, "ip6"),
        (f"127.0.0.1:7001/p2p/{ED25519_ID}", "127.0.0.1", 7001, ED25519_ID, "ip4"),
        (f"/ip4/127.0.0.1/tcp/7001/p2p/{RSA_ID}", "127.0.0.1", 7001, RSA_ID, "ip4"),
        ("/ip6/0:0::1/tcp/9", "::1", 9, None, "ip6"),
        ("/dns4/example.org/tcp/7001", "example.org", 7001, None, "dns4"),
    ],
)
def test_accepted_forms(text, host, port, peer, protocol):
    address = parse_peer_address(text)
    assert (address.host, address.port, address.peer_id, address.protocol) == (host, port, peer, protocol)
    assert parse_peer_address(address.multiaddr) == address


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"127.0.0.1:7001/p2p/{ED25519_ID[:25]}", "not a valid libp2p peer ID"),  # 25 base58 characters
        ("127.0.0.1:7001/p2p/" + "1" * 25, "not a valid libp2p peer ID"),
        (f"127.0.0.1:7001/p2p/{ED25519_ID}0", "not a valid libp2p peer ID"),  # '0' is not base58
        ("127.0.0.1:7001\n", "whitespace"),
        (" 127.0.0.1:7001", "whitespace"),
        ("127.0.0.1:\u0667\u0660\u0660\u0661", "non-ASCII"),
        ("::1:7001", "[addr]:port"),
        ("[localhost]:7001", "[ipv6]:port"),
        ("127.0.0.1:0", "port must be 1-65535"),
        ("/ip4/::1/tcp/1", "not an ip4 address"),
        ("/ip4/127.0.0.1/udp/1", "expected /ip4"),
        ("/ip4/127.0.0.1/tcp/1/", "expected /ip4"),
        ("/ip4/127.0.0.1/tcp/1/ipfs/" + ED25519_ID, "expected /p2p/"),
        ("/dns4/-bad-/tcp/1", "not a valid host name"),
        ("x" * 600, "limit 512"),
    ],
)
def test_refused_forms_say_why(text, reason):
    with pytest.raises(ValueError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        parse_peer_address(text)


def test_base58_keeps_leading_zero_bytes():
    assert base58_decode("1112") == b"\x00\x00\x00\x01"
    assert base58_decode("") == b""


def test_peer_ids_libp2p_generates_are_accepted():
    pytest.importorskip("libp2p")
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    for _ in range(50):
        text = ID.from_pubkey(create_new_key_pair().public_key).to_base58()
        assert check_peer_id(text) == text
