"""Configuration: TOML plus environment into frozen settings; one line per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.errors import ConfigError
from daemon.inputs.config import load_settings

BASE = """
[[chains]]
name = "ethereum"
family = "evm"
chain_id = 1
sources = [{ kind = "jsonrpc", url = "https://eth.example/rpc" }]
"""


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "segwatch.toml"
    path.write_text(text)
    return load_settings(path)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return caught.value.lines


def test_documented_shape_loads_with_defaults(tmp_path: Path) -> None:
    """A minimal chain gets the documented defaults and is immutable."""
    settings = load_settings(_write(tmp_path, BASE))
    chain = settings.chains[0]
    assert settings.store.url == "sqlite:///segwatch.db"
    assert settings.daemon.firm_owner == "FIRM" and settings.daemon.calendar == "NYSE"
    assert (chain.confirmations, chain.verify, chain.native_asset.symbol) == (12, 1, "ETH")
    with pytest.raises(Exception, match="frozen"):
        chain.confirmations = 1  # type: ignore[misc]


def test_example_configuration_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """config/segwatch.example.toml and the demo configuration load as shipped."""
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("ETH_RPC_URL", "https://key@eth.example/v2/abc")
    monkeypatch.setenv("SEGWATCH_DEMO_RPC", "http://127.0.0.1:8545")
    assert load_settings(repo / "config/segwatch.example.toml").chains[0].name == "ethereum"
    assert load_settings(repo / "config/demo/segwatch.toml").chains[0].chain_id == 31337


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SEGWATCH_SECTION__KEY beats the file; url_env takes a source URL from the environment."""
    monkeypatch.setenv("SEGWATCH_STORE__URL", "postgresql+psycopg://u@db/x")
    monkeypatch.setenv("SEGWATCH_DAEMON__FIRM_OWNER", "ACME")
    monkeypatch.setenv("MY_RPC", "https://eth.example/v3/SECRET")
    text = BASE.replace('url = "https://eth.example/rpc"', 'url_env = "MY_RPC"')
    settings = load_settings(_write(tmp_path, text + '[store]\nurl = "sqlite:///f.db"\n'))
    assert settings.store.url == "postgresql+psycopg://u@db/x"
    assert settings.daemon.firm_owner == "ACME"
    assert settings.chains[0].sources[0].url == "https://eth.example/v3/SECRET"


def test_unset_url_env_is_an_error(tmp_path: Path) -> None:
    """A source naming an environment variable that is not set is refused, naming it."""
    text = BASE.replace('url = "https://eth.example/rpc"', 'url_env = "NOPE_NOT_SET_1"')
    (line,) = problems(tmp_path, text)
    assert "NOPE_NOT_SET_1" in line and "chains['ethereum'].sources[0]" in line


@pytest.mark.parametrize(("change", "expected"), [
    (('chain_id = 1', 'chain_id = 1\nnetwork = "bitcoin"'), "network is for utxo chains"),
    (('chain_id = 1', ''), "an evm chain needs chain_id"),
    (('kind = "jsonrpc"', 'kind = "esplora"'), "does not serve an evm chain"),
    (('kind = "jsonrpc"', 'kind = "grpc"'), "unknown kind 'grpc'"),
    (('chain_id = 1', 'chain_id = 1\nverify = 2'), "verify = 2 needs at least"),
    (('chain_id = 1', 'chain_id = 1\nconfirmations = -1'), "confirmations"),
    (('chain_id = 1', 'chain_id = 1\ntokens = [{ symbol = "ETH", contract = '
      '"0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", decimals = 6 }]'),
     "duplicate asset symbol 'ETH'"),
    (('chain_id = 1', 'chain_id = 1\ntokens = [{ symbol = "X", contract = '
      '"0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB4", decimals = 6 }]'), "not an EVM address"),
    (('name = "ethereum"', 'name = "Ethereum Main"'), "lowercase"),
])
def test_bad_chain_values_are_named(tmp_path: Path, change: tuple[str, str],
                                    expected: str) -> None:
    """Each bad chain value is one line naming the file, the key path and the problem."""
    lines = problems(tmp_path, BASE.replace(*change))
    assert any(expected in line for line in lines), lines
    assert all(line.startswith(str(tmp_path / "segwatch.toml") + ": ") for line in lines)


def test_bad_daemon_values_are_named(tmp_path: Path) -> None:
    """Unknown timezone, unknown calendar and a bad listen address are each reported."""
    lines = problems(tmp_path, BASE + '[daemon]\ntimezone = "Mars/Olympus"\n'
                     'calendar = "XYZ"\nlisten = "nowhere"\n')
    text = "\n".join(lines)
    assert "daemon.timezone: unknown timezone" in text
    assert "daemon.calendar: unknown calendar 'XYZ'" in text
    assert "must be HOST:PORT" in text


def test_utxo_chain_rules(tmp_path: Path) -> None:
    """A utxo chain needs a known network and a utxo source kind; its native asset has 8 decimals."""
    utxo = ('[[chains]]\nname = "btc"\nfamily = "utxo"\nnetwork = "bitcoin"\n'
            'sources = [{ kind = "esplora", url = "https://esplora.example/api" }]\n')
    chain = load_settings(_write(tmp_path, utxo)).chains[0]
    assert (chain.native_asset.symbol, chain.native_asset.decimals) == ("BTC", 8)
    assert "unknown network 'dogenet'" in problems(tmp_path, utxo.replace('"bitcoin"',
                                                                          '"dogenet"'))[0]
    assert "does not serve a utxo chain" in problems(
        tmp_path, utxo.replace('"esplora"', '"jsonrpc"'))[0]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "segwatch.toml"
    path.write_text(text)
    return path


def test_daemon_start_up_errors_in_the_configuration(tmp_path: Path) -> None:
    """Two chains with one name and an unknown alert kind are each one named line."""
    twice = BASE + BASE[BASE.index("[[chains]]"):]
    assert any("duplicate chain name 'ethereum'" in line for line in problems(tmp_path, twice))
    sink = BASE + '[[alerts]]\nkind = "pager"\nurl = "https://hooks.example/x"\n'
    assert any("alerts[0].kind" in line and "pager" in line
               for line in problems(tmp_path, sink)), problems(tmp_path, sink)


def test_sources_are_named_kind_n_unless_named(tmp_path: Path) -> None:
    """A source's name defaults to KIND-N (its position); an explicit name is kept, and a
    duplicate or malformed name is refused in one line."""
    text = BASE.replace('sources = [{ kind = "jsonrpc", url = "https://eth.example/rpc" }]',
                        'sources = [{ kind = "jsonrpc", url = "https://a.example/rpc" },\n'
                        '  { kind = "jsonrpc", url = "https://b.example/v3/KEY", '
                        'name = "infura" }]')
    chain = load_settings(_write(tmp_path, text)).chains[0]  # type: ignore[attr-defined]
    assert [(s.name, s.host) for s in chain.sources] == [("jsonrpc-1", "a.example"),
                                                         ("infura", "b.example")]
    twice = text.replace('name = "infura"', 'name = "jsonrpc-1"')
    assert problems(tmp_path, twice) == [
        f"{tmp_path / 'segwatch.toml'}: chains['ethereum']: duplicate source name 'jsonrpc-1'"]
    assert "source name must be" in problems(tmp_path, text.replace('"infura"', '"a b"'))[0]


def test_plain_http_to_a_remote_host_is_refused_unless_allowed(tmp_path: Path) -> None:
    """http:// to a host that is not loopback is refused (keys and answers would cross the
    network in clear) unless the source or sink says `allow_insecure = true`; loopback
    hosts are fine."""
    remote = BASE.replace("https://eth.example/rpc", "http://10.1.2.3:8545")
    (line,) = problems(tmp_path, remote)
    assert "plain http:// to 10.1.2.3, which is not loopback" in line
    allowed = remote.replace('url = "http://10.1.2.3:8545"',
                             'url = "http://10.1.2.3:8545", allow_insecure = true')
    assert load(tmp_path, allowed)
    for host in ("127.0.0.1", "localhost", "[::1]"):
        assert load(tmp_path, BASE.replace("https://eth.example/rpc", f"http://{host}:8545"))
    sink = BASE + '[[alerts]]\nkind = "webhook"\nurl = "http://hooks.example/x"\n'
    assert "plain http:// to hooks.example" in problems(tmp_path, sink)[0]


def test_headers_come_from_the_environment_and_never_show(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`headers_env` maps a header to an environment variable: the value is sent, but it
    is not part of the settings' repr; an unset variable is one line."""
    text = BASE.replace('url = "https://eth.example/rpc"',
                        'url = "https://eth.example/rpc", '
                        'headers_env = { "x-api-key" = "ETH_KEY" }')
    assert "environment variable ETH_KEY (headers_env.x-api-key) is not set" in \
        problems(tmp_path, text)[0]
    monkeypatch.setenv("ETH_KEY", "s3cr3t-header-value")
    source = load_settings(_write(tmp_path, text)).chains[0].sources[0]
    assert source.headers == {"x-api-key": "s3cr3t-header-value"}
    assert "s3cr3t" not in repr(source) and "s3cr3t" not in source.model_dump_json()


@pytest.mark.parametrize("name", ["SEGWATCH_USERS", "SEGWATCH_AUTH__OIDC__ROLES",
                                  "SEGWATCH_AUTH"])
def test_users_and_roles_cannot_come_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The insider attack: SEGWATCH_USERS='[{"name":"eve","roles":["checker"]}]' once
    overrode the file's users. Now any such variable is a configuration error."""
    config = tmp_path / "segwatch.toml"
    config.write_text('[[users]]\nname = "mia"\nroles = ["maker"]\n')
    monkeypatch.setenv(name, '[{"name": "eve", "roles": ["checker"]}]')
    with pytest.raises(ConfigError, match="cannot come from the environment"):
        load_settings(config)


def test_names_with_a_trailing_newline_are_refused(tmp_path: Path) -> None:
    """`^…$` with re.match accepts "name\\n"; every configured name is matched whole."""
    config = tmp_path / "segwatch.toml"
    config.write_text('[[chains]]\nname = "eth\\n"\nfamily = "evm"\nchain_id = 1\n'
                      'sources = [{ kind = "jsonrpc", url = "http://127.0.0.1:8545" }]\n')
    with pytest.raises(ConfigError, match="name"):
        load_settings(config)


def _evm_chain(name: str, chain_id: int, extra: str = "") -> str:
    return f"""
[[chains]]
name = "{name}"
family = "evm"
chain_id = {chain_id}
sources = [{{ kind = "jsonrpc", url = "https://{name}.example/rpc" }}]
{extra}
"""


def test_fee_model_defaults_by_chain_id_and_can_be_set(tmp_path: Path) -> None:
    """OP Mainnet and Base are op-stack (with Jovian's known activation), Arbitrum One is
    arbitrum, anything else ethereum; `fee_model` and `jovian_time` override; an unknown
    model, or fee settings on a utxo chain, are one clear line each."""
    settings = load_settings(_write(tmp_path, "".join([
        _evm_chain("ethereum", 1), _evm_chain("optimism", 10), _evm_chain("base", 8453),
        _evm_chain("arbitrum", 42161),
        _evm_chain("myrollup", 99999, 'fee_model = "op-stack"\njovian_time = 1800000000')])))
    assert [(c.fees, c.jovian) for c in settings.chains] == [
        ("ethereum", None), ("op-stack", 1_764_691_201), ("op-stack", 1_764_691_201),
        ("arbitrum", None), ("op-stack", 1_800_000_000)]
    assert any("fee_model" in line for line in problems(
        tmp_path, _evm_chain("ethereum", 1, 'fee_model = "zksync"')))
    utxo = """
[[chains]]
name = "bitcoin"
family = "utxo"
network = "bitcoin"
fee_model = "op-stack"
sources = [{ kind = "esplora", url = "https://esplora.example/api" }]
"""
    assert any("fee_model and jovian_time are for evm chains" in line
               for line in problems(tmp_path, utxo))


def test_chain_settings_from_the_environment_by_chain_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17 item 6: SEGWATCH_CHAINS__<NAME>__<KEY> overrides one chain's key (a '-' in
    the name is '_'); a list index or an unknown name is one line naming the form and the
    configured chains, never "chains: Input should be a valid list"."""
    path = _write(tmp_path, BASE + _evm_chain("litecoin-x", 7))
    monkeypatch.setenv("SEGWATCH_CHAINS__ETHEREUM__POLL_SECONDS", "10")
    monkeypatch.setenv("SEGWATCH_CHAINS__LITECOIN_X__CONFIRMATIONS", "3")
    ethereum, other = load_settings(path).chains
    assert (ethereum.poll_seconds, other.confirmations) == (10.0, 3)
    monkeypatch.setenv("SEGWATCH_CHAINS__0__POLL_SECONDS", "10")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    (line,) = caught.value.lines
    assert "SEGWATCH_CHAINS__<NAME>__<KEY>" in line and "ethereum, litecoin-x" in line
    monkeypatch.delenv("SEGWATCH_CHAINS__0__POLL_SECONDS")
    monkeypatch.delenv("SEGWATCH_CHAINS__LITECOIN_X__CONFIRMATIONS")
    monkeypatch.setenv("SEGWATCH_CHAINS__ETHEREUM__POLL_SECONDS", "-1")
    assert any("poll_seconds" in line for line in problems(tmp_path, BASE))


def test_listen_messages_say_what_is_wrong(tmp_path: Path) -> None:
    """Issue 17 item 5: port 0 is "between 1 and 65535", not "must be HOST:PORT"."""
    (line,) = problems(tmp_path, '[daemon]\nlisten = "127.0.0.1:0"\n' + BASE)
    assert "between 1 and 65535" in line
    (line,) = problems(tmp_path, '[daemon]\nlisten = "9464"\n' + BASE)
    assert "must be HOST:PORT" in line


def test_the_example_configuration_documents_every_key() -> None:
    """Issue 17 item 8: every key of every settings section appears in
    config/segwatch.example.toml (set, or commented out with its default)."""
    import re

    from pydantic import BaseModel

    from daemon.inputs import auth_settings, chain_settings, source_settings
    from daemon.inputs import config as c

    text = (Path(__file__).parents[2] / "config" / "segwatch.example.toml").read_text()
    written = set(re.findall(r"(?:^|[\s{,#])([a-z_][a-z0-9_]*)\s*=", text, re.MULTILINE))
    written |= set(re.findall(r"^#?\s*\[\[?(?:[a-z_]+\.)?([a-z_]+)\]?\]", text, re.MULTILINE))  # sections
    sections = [v for module in (c, chain_settings, source_settings, auth_settings)
                for v in vars(module).values()
                if isinstance(v, type) and issubclass(v, BaseModel)
                and v.__module__ == module.__name__]
    missing = sorted(f"{s.__name__}.{key}" for s in sections for key in s.model_fields
                     if key not in written)
    assert missing == []


def test_ws_url_is_checked_like_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18 item 4: `ws_url` must be ws:// or wss:// with a host; plain ws:// only to
    loopback (or with allow_insecure); only jsonrpc sources subscribe; `ws_url_env` names
    a variable holding it (its key parts are masked like url's)."""
    def chain(source: str) -> str:
        return BASE.replace('{ kind = "jsonrpc", url = "https://eth.example/rpc" }', source)

    loaded = load(tmp_path, chain('{ kind = "jsonrpc", url = "https://eth.example/rpc", '
                                  'ws_url = "wss://eth.example/ws?key=abc" }'))
    assert loaded.chains[0].sources[0].ws_url == "wss://eth.example/ws?key=abc"
    (line,) = problems(tmp_path, chain('{ kind = "jsonrpc", url = "https://eth.example/rpc",'
                                       ' ws_url = "ws://eth.example/ws" }'))
    assert "plain ws:// to eth.example" in line
    (line,) = problems(tmp_path, chain('{ kind = "jsonrpc", url = "https://eth.example/rpc",'
                                       ' ws_url = "https://eth.example/ws" }'))
    assert "ws_url: bad URL" in line
    assert load(tmp_path, chain('{ kind = "jsonrpc", url = "http://127.0.0.1:8545", '
                                'ws_url = "ws://127.0.0.1:8545" }')).chains[0].sources[0].ws_url
    monkeypatch.setenv("ETH_WS_URL", "wss://eth.example/ws/s3cret-path")
    from daemon.runtime.logs import settings_secrets

    settings = load(tmp_path, chain('{ kind = "jsonrpc", url = "https://eth.example/rpc", '
                                    'ws_url_env = "ETH_WS_URL" }'))
    assert settings.chains[0].sources[0].ws_url == "wss://eth.example/ws/s3cret-path"
    assert "s3cret-path" in settings_secrets(settings)


def test_zmq_url_is_for_core_rpc_on_loopback(tmp_path: Path) -> None:
    """Issue 18 item 4 (Core): `zmq_url` is tcp://HOST:PORT on a core-rpc source; ZMQ is
    plaintext, so a host that is not loopback needs allow_insecure; other kinds refuse it."""
    utxo = """
[[chains]]
name = "litecoin"
family = "utxo"
network = "regtest"
sources = [SOURCE]
"""

    def chain(source: str) -> str:
        return utxo.replace("SOURCE", source)

    loaded = load(tmp_path, chain('{ kind = "core-rpc", url = "http://127.0.0.1:19443", '
                                  'zmq_url = "tcp://127.0.0.1:28332" }'))
    assert loaded.chains[0].sources[0].zmq_url == "tcp://127.0.0.1:28332"
    (line,) = problems(tmp_path, chain('{ kind = "core-rpc", url = "http://127.0.0.1:19443",'
                                       ' zmq_url = "tcp://node.example:28332" }'))
    assert "node.example is not loopback" in line
    assert load(tmp_path, chain('{ kind = "core-rpc", url = "http://127.0.0.1:19443", '
                                'zmq_url = "tcp://node.example:28332", allow_insecure = true }'))
    (line,) = problems(tmp_path, chain('{ kind = "core-rpc", url = "http://127.0.0.1:19443",'
                                       ' zmq_url = "tcp://127.0.0.1" }'))
    assert "zmq_url: give the port" in line
    (line,) = problems(tmp_path, chain('{ kind = "core-rpc", url = "http://127.0.0.1:19443",'
                                       ' zmq_url = "ipc:///tmp/x" }'))
    assert "zmq_url: bad URL" in line
    (line,) = problems(tmp_path, BASE.replace(
        '{ kind = "jsonrpc", url = "https://eth.example/rpc" }',
        '{ kind = "jsonrpc", url = "https://eth.example/rpc", zmq_url = "tcp://127.0.0.1:1" }'))
    assert "zmq_url is for core-rpc sources" in line
