"""Alipay payments against the Alipay simulator over real HTTP on loopback (protocols §3.4-§3.6, §7).

The client is ``integrations.alipay.trade.AlipayTradeClient`` on the gateway client. The simulator keeps the
trades per app, plays the resident's ``my.tradePay`` (``/test/trade/pay``) and the app SDK
(``/test/trade/app-pay``), and posts signed ``trade_status_sync`` notifications to a small receiver served
here, retried on Alipay's schedule on the shared clock until the receiver answers exactly ``success``.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import pytest
from litestar import Litestar, Request, Response, post

from domain.kernel.errors import ConflictError
from integrations.alipay import (
    AlipayBadSignatureError,
    AlipayBillNotFoundError,
    AlipayNotificationError,
    AlipayRefundAmountError,
    AlipaySellerBalanceNotEnoughError,
    AlipayTradeClient,
    AlipayTradeClosedError,
    AlipayTradeHasSuccessError,
    AlipayTradeInconsistentError,
    AlipayTradeNotFoundError,
    AlipayTradeRejectedError,
    AlipayTradeStatusError,
    AlipayUnavailableError,
    extract_response_content,
    parse_trade_bill,
    rsa2_verify,
    sign_content,
    verify_notify,
)
from integrations.alipay.trade import UNAVAILABLE_MESSAGE
from sandbox.alipay import DEFAULT_SELLER_ID, NOTIFY_RETRY_SCHEDULE, TRADE_METHODS, TRADE_NOTIFICATIONS
from sandbox.framework import CALLBACKS, run_standalone
from tests.contract import test_alipay
from tests.contract.test_alipay import APP_ID, OTHER_APP_ID, START, AlipaySandbox, TamperingProxy, public_pem

served = test_alipay.served
"""test_alipay's fixture: one simulator served over loopback for this module, as for that one."""
tampering_proxy = test_alipay.tampering_proxy

BUYER = "2088000000000042"
SUBJECT = "挂号费 内科 张医生"
EXPIRE = START + timedelta(minutes=15)


# -- the notification receiver (our callback endpoint's stand-in) --------------------------------------------------


@dataclass
class Receiver:
    """Records every notification POST and answers ``replies`` in turn (then ``success``)."""

    url: str = ""
    bodies: list[bytes] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)

    @property
    def notify_url(self) -> str:
        return f"{self.url}/callbacks/alipay/notify"

    @property
    def received(self) -> list[dict[str, str]]:
        return [dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True)) for body in self.bodies]

    def reset(self) -> None:
        self.bodies.clear()
        self.content_types.clear()
        self.replies.clear()

    def app(self) -> Litestar:
        @post("/callbacks/alipay/notify", status_code=200)
        async def notify(request: Request[Any, Any, Any]) -> Response[str]:
            self.bodies.append(await request.body())
            self.content_types.append(request.headers.get("content-type", ""))
            reply = self.replies.pop(0) if self.replies else "success"
            return Response(reply, media_type="text/plain")

        return Litestar([notify])


@pytest.fixture(scope="module")
async def served_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    async with run_standalone(receiver.app()) as url:
        receiver.url = url
        yield receiver


@pytest.fixture
def receiver(served_receiver: Receiver) -> Receiver:
    served_receiver.reset()
    return served_receiver


@pytest.fixture
async def sandbox(served: AlipaySandbox) -> AlipaySandbox:
    """A fresh simulator per test: one app in user_id mode, no trades, faults or records, the clock at START.

    test_alipay's reset leaves the login and message methods only (a simulator starts with the trade methods
    too); they are put back here."""
    await served.reset()
    served.simulator.methods.update(TRADE_METHODS)
    return served


def trade_client(sandbox: AlipaySandbox, **kwargs: Any) -> AlipayTradeClient:
    return AlipayTradeClient(
        sandbox.client(**kwargs),
        alipay_public_key_pem=sandbox.simulator.public_key_pem,
        http=sandbox.http,
        seller_id=DEFAULT_SELLER_ID,
    )


async def create(
    trade: AlipayTradeClient, receiver: Receiver, out_trade_no: str = "B1", total_fen: int = 2500, **kwargs: Any
) -> str:
    options: dict[str, Any] = {"buyer_id": BUYER, "time_expire": EXPIRE, "notify_url": receiver.notify_url, **kwargs}
    return await trade.create(out_trade_no, total_fen, SUBJECT, **options)


async def pay(sandbox: AlipaySandbox, *, expect: int = 200, **body: str) -> dict[str, Any]:
    """The resident pays in my.tradePay; then the notification is given its first delivery attempt."""
    response = await sandbox.admin.post("/sandbox/alipay/test/trade/pay", json=body)
    assert response.status_code == expect, response.text
    await sandbox.advance(0)
    answer: dict[str, Any] = response.json()
    return answer


async def stream(sandbox: AlipaySandbox, name: str) -> list[dict[str, Any]]:
    response = await sandbox.admin.get("/sandbox/admin/alipay/requests", params={"stream": name})
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


async def set_trade_faults(sandbox: AlipaySandbox, body: dict[str, Any]) -> None:
    response = await sandbox.admin.put("/sandbox/alipay/test/trade/faults", json=body)
    assert response.status_code == 200, response.text


def assert_clean(exc: Exception, *ids: str) -> None:
    """A Chinese message, and no buyer id in what gets logged or shown."""
    assert any("\u4e00" <= ch <= "\u9fff" for ch in getattr(exc, "message", "")), exc
    for value in (BUYER, *ids):
        assert value not in str(exc)
        assert value not in getattr(exc, "detail", "")
        assert value not in getattr(exc, "message", "")


# -- paying --------------------------------------------------------------------------------------------------------


async def test_create_pay_notify_and_query(sandbox: AlipaySandbox, receiver: Receiver) -> None:
    trade = trade_client(sandbox)
    trade_no = await create(trade, receiver)
    assert trade_no.startswith("2025030122001")
    assert len(trade_no) == 28

    waiting = await trade.query("B1")
    assert (waiting.status, waiting.total_fen, waiting.trade_no) == ("WAIT_BUYER_PAY", 2500, trade_no)
    assert waiting.buyer_user_id == BUYER
    assert not waiting.is_paid
    assert waiting.send_pay_date is None
    assert receiver.bodies == [], "nothing is notified before payment"

    paid = await pay(sandbox, tradeNo=trade_no)
    assert (paid["resultCode"], paid["tradeStatus"]) == ("9000", "TRADE_SUCCESS")

    (params,) = receiver.received
    assert receiver.content_types[0].startswith("application/x-www-form-urlencoded")
    assert verify_notify(params, alipay_public_key_pem=sandbox.simulator.public_key_pem, try_with_sign_type=False)
    assert not verify_notify(params, alipay_public_key_pem=public_pem("app")), "signed by Alipay, not the app"
    notification = trade.parse_notification(params)
    assert (notification.trade_status, notification.total_fen, notification.trade_no) == (
        "TRADE_SUCCESS",
        2500,
        trade_no,
    )
    assert notification.matches("B1", 2500)
    assert notification.gmt_payment == START
    assert notification.seller_id == DEFAULT_SELLER_ID
    assert notification.buyer_id == BUYER
    assert params["total_amount"] == "25.00"
    assert params["subject"] == SUBJECT

    done = await trade.query("B1")
    assert done.status == "TRADE_SUCCESS"
    assert done.is_paid
    assert (done.buyer_pay_fen, done.receipt_fen, done.send_pay_date) == (2500, 2500, START)

    (record,) = await stream(sandbox, TRADE_NOTIFICATIONS)
    assert record["data"]["tradeStatus"] == "TRADE_SUCCESS"
    assert record["data"]["params"] == params
    (attempt,) = await stream(sandbox, CALLBACKS)
    assert (attempt["callbackId"], attempt["attempt"], attempt["outcome"]) == (paid["callbackId"], 1, "delivered")
    assert attempt["responseBody"] == "success"


async def test_create_is_idempotent_per_app(sandbox: AlipaySandbox, receiver: Receiver) -> None:
    trade = trade_client(sandbox)
    first = await create(trade, receiver)
    assert await create(trade, receiver) == first, "the same request answers the same trade"

    with pytest.raises(AlipayTradeInconsistentError) as caught:
        await create(trade, receiver, total_fen=2600)
    assert (caught.value.sub_code, caught.value.code) == (
        "ACQ.CONTEXT_INCONSISTENT",
        "alipay.trade_context_inconsistent",
    )
    assert isinstance(caught.value, AlipayTradeRejectedError)
    assert isinstance(caught.value, ConflictError)
    assert_clean(caught.value)

    sandbox.simulator.register_app(OTHER_APP_ID, public_pem("other"))
    other = trade_client(sandbox, app_id=OTHER_APP_ID, app_key="other")
    assert await create(other, receiver, total_fen=100) != first, "out_trade_no is unique per app only"
    assert (await trade.query("B1")).total_fen == 2500

    await pay(sandbox, tradeNo=first)
    with pytest.raises(AlipayTradeHasSuccessError) as paid:
        await create(trade, receiver)
    assert paid.value.sub_code == "ACQ.TRADE_HAS_SUCCESS"
    await pay(sandbox, tradeNo=first, expect=409)


async def test_open_id_apps_create_with_buyer_open_id(sandbox: AlipaySandbox, receiver: Receiver) -> None:
    await sandbox.configure_app(APP_ID, mode="open_id")
    open_id = (await sandbox.auth_code())["openId"]
    trade = trade_client(sandbox)
    trade_no = await trade.create(
        "B2", 1, SUBJECT, buyer_open_id=open_id, time_expire=None, notify_url=receiver.notify_url
    )
    found = await trade.query("B2")
    assert (found.buyer_open_id, found.buyer_user_id) == (open_id, None)
    await pay(sandbox, outTradeNo="B2")
    notification = trade.parse_notification(receiver.received[0])
    assert (notification.buyer_open_id, notification.buyer_id, notification.trade_no) == (open_id, None, trade_no)
    assert open_id not in repr(notification)


async def test_an_unknown_trade(sandbox: AlipaySandbox) -> None:
    trade = trade_client(sandbox)
    with pytest.raises(AlipayTradeNotFoundError) as caught:
        await trade.query("NOPE")
    assert (caught.value.code, caught.value.sub_code, caught.value.alipay_code) == (
        "alipay.trade_not_exist",
        "ACQ.TRADE_NOT_EXIST",
        "40004",
    )
    assert caught.value.sub_msg == "交易不存在"
    assert_clean(caught.value)
    with pytest.raises(AlipayTradeNotFoundError):
        await trade.close("NOPE")
    with pytest.raises(AlipayTradeNotFoundError):
        await trade.refund("NOPE", 100, "R1", "退款")
    missing = await sandbox.admin.post("/sandbox/alipay/test/trade/pay", json={"outTradeNo": "NOPE"})
    assert missing.status_code == 404


# -- closing and expiry --------------------------------------------------------------------------------------------


async def test_close_an_unpaid_trade(sandbox: AlipaySandbox, receiver: Receiver) -> None:
    trade = trade_client(sandbox)
    trade_no = await create(trade, receiver)
    await trade.close("B1")
    closed = await trade.query("B1")
    assert closed.status == "TRADE_CLOSED"
    assert closed.is_closed
    with pytest.raises(AlipayTradeStatusError) as again:
        await trade.close("B1")
    assert again.value.sub_code == "ACQ.TRADE_STATUS_ERROR"
    refused = await sandbox.admin.post("/sandbox/alipay/test/trade/pay", json={"tradeNo": trade_no})
    assert refused.status_code == 409
    assert refused.json()["extra"]["resultCode"] == "4000"
    with pytest.raises(AlipayTradeClosedError) as recreate:
        await create(trade, receiver)
    assert recreate.value.sub_code == "ACQ.TRADE_HAS_CLOSE"
    assert receiver.bodies == [], "closing an unpaid trade notifies nothing"


async def test_a_paid_trade_cannot_be_closed(sandbox: AlipaySandbox, receiver: Receiver) -> None:
    trade = trade_client(sandbox)
    trade_no = await create(trade, receiver)
    await pay(sandbox, tradeNo=trade_no)
    with pytest.raises(AlipayTradeStatusError):
        await trade.close("B1")
    assert (await trade.query("B1")).status == "TRADE_SUCCESS"


async def test_time_expire_closes_unpaid_trades_by_the_clock(sandbox: AlipaySandbox, receiver: Receiver) -> None:
    trade = trade_client(sandbox)
    trade_no = await create(trade, receiver)
    await sandbox.advance(14 * 60 + 59)
    assert (await trade.query("B1")).status == "WAIT_BUYER_PAY"
    await sandbox.advance(1)
    assert (await trade.query("B1")).status == "TRADE_CLOSED"
    await pay(sandbox, tradeNo=trade_no, expect=409)
    state = (await sandbox.admin.get("/sandbox/alipay/test/trades/B1")).json()
    assert state["closedAt"] == "2025-03-01T08:15:00Z"
    assert receiver.bodies == []


# -- refunds -------------------------------------------------------------------------------------------------------


async def test_partial_then_full_refunds(sandbox: AlipaySandbox, receiver: Receiver) -> None:
    trade = trade_client(sandbox)
    trade_no = await create(trade, receiver)
    await pay(sandbox, tradeNo=trade_no)
    await sandbox.advance(3600)

    first = await trade.refund("B1", 1000, "R1", "医生停诊，退部分费用")
    assert (first.fund_change, first.refund_fen, first.requested_fen, first.trade_no) == (True, 1000, 1000, trade_no)
    assert first.gmt_refund_pay == START + timedelta(hours=1)
    await sandbox.advance(0)
    partial = trade.parse_notification(receiver.received[-1])
    assert (partial.trade_status, partial.refund_fen, partial.out_biz_no) == ("TRADE_SUCCESS", 1000, "R1")
    assert partial.is_refund
    assert partial.gmt_refund == START + timedelta(hours=1)

    repeat = await trade.refund("B1", 1000, "R1", "医生停诊，退部分费用")
    assert (repeat.fund_change, repeat.refund_fen) == (False, 1000), "the same out_request_no moves nothing"
    await sandbox.advance(0)
    assert len(receiver.bodies) == 2, "a repeat is not notified again"

    with pytest.raises(AlipayRefundAmountError) as over:
        await trade.refund("B1", 1501, "R2", "超额退款")
    assert over.value.sub_code == "ACQ.REASON_TRADE_REFUND_FEE_ERR"
    assert_clean(over.value)

    rest = await trade.refund("B1", 1500, "R2", "全部退款")
    assert (rest.fund_change, rest.refund_fen) == (True, 2500)
    await sandbox.advance(0)
    full = trade.parse_notification(receiver.received[-1])
    assert (full.trade_status, full.refund_fen, full.out_biz_no) == ("TRADE_CLOSED", 2500, "R2")
    assert full.gmt_close == START + timedelta(hours=1)
    assert (await trade.query("B1")).status == "TRADE_CLOSED"

    with pytest.raises(AlipayTradeClosedError):
        await trade.refund("B1", 1, "R3", "再退")

    done = await trade.refund_query("B1", "R1")
    assert (done.succeeded, done.refund_fen, done.total_fen, done.trade_no) == (True, 1000, 2500, trade_no)
    assert done.gmt_refund_pay == START + timedelta(hours=1)
    unknown = await trade.refund_query("B1", "R9")
    assert (unknown.succeeded, unknown.refund_fen) == (False, None)

    state = (await sandbox.admin.get("/sandbox/alipay/test/trades/B1")).json()
    assert (state["refundedFen"], [r["outRequestNo"] for r in state["refunds"]]) == (2500, ["R1", "R2"])


async def test_refunding_an_unpaid_trade_is_refused(sandbox: AlipaySandbox, receiver: Receiver) -> None:
    trade = trade_client(sandbox)
    await create(trade, receiver)
    with pytest.raises(AlipayTradeStatusError) as caught:
        await trade.refund("B1", 100, "R1", None)
    assert caught.value.code == "alipay.trade_status_error"


async def test_a_failing_refund_succeeds_on_retry(sandbox: AlipaySandbox, receiver: Receiver) -> None:
    trade = trade_client(sandbox)
    trade_no = await create(trade, receiver)
    await pay(sandbox, tradeNo=trade_no)
    await set_trade_faults(sandbox, {"refundFailure": {"subCode": "ACQ.SELLER_BALANCE_NOT_ENOUGH", "count": 1}})
    with pytest.raises(AlipaySellerBalanceNotEnoughError) as caught:
        await trade.refund("B1", 2500, "R1", "退款")
    assert (caught.value.code, caught.value.sub_code) == (
        "alipay.seller_balance_not_enough",
        "ACQ.SELLER_BALANCE_NOT_ENOUGH",
    )
    assert_clean(caught.value)
    assert not (await trade.refund_query("B1", "R1")).succeeded
    retried = await trade.refund("B1", 2500, "R1", "退款")
    assert (retried.fund_change, retried.refund_fen) == (True, 2500)


# -- 20000 and transport -------------------------------------------------------------------------------------------


async def test_a_20000_is_unavailable_and_retryable(sandbox: AlipaySandbox, receiver: Receiver) -> None:
    trade = trade_client(sandbox)
    trade_no = await create(trade, receiver)
    await set_trade_faults(sandbox, {"unavailable": {"alipay.trade.query": {"count": 1}}})
    with pytest.raises(AlipayUnavailableError) as caught:
        await trade.query("B1")
    assert (caught.value.code, caught.value.message) == ("alipay.unavailable", UNAVAILABLE_MESSAGE)
    assert (await trade.query("B1")).trade_no == trade_no, "the outage was one call"


async def test_a_refund_answered_20000_after_it_happened(sandbox: AlipaySandbox, receiver: Receiver) -> None:
    trade = trade_client(sandbox)
    trade_no = await create(trade, receiver)
    await pay(sandbox, tradeNo=trade_no)
    await set_trade_faults(sandbox, {"unavailable": {"alipay.trade.refund": {"count": 1, "processed": True}}})
    with pytest.raises(AlipayUnavailableError):
        await trade.refund("B1", 500, "R1", "退款")
    assert (await trade.refund_query("B1", "R1")).succeeded, "query before retrying: it did happen"
    retried = await trade.refund("B1", 500, "R1", "退款")
    assert (retried.fund_change, retried.refund_fen) == (False, 500)


async def test_transport_failures_are_unavailable(sandbox: AlipaySandbox, receiver: Receiver) -> None:
    trade = trade_client(sandbox, gateway_url="http://127.0.0.1:9/gateway.do")
    with pytest.raises(AlipayUnavailableError) as caught:
        await trade.query("B1")
    assert caught.value.message == UNAVAILABLE_MESSAGE
    await sandbox.set_faults({"inbound": {"errorRate": 1.0, "errorStatus": 502, "pathPrefix": "/gateway"}})
    with pytest.raises(AlipayUnavailableError):
        await create(trade_client(sandbox), receiver)


# -- notifications: retries and faults -----------------------------------------------------------------------------


async def attempts(sandbox: AlipaySandbox) -> list[dict[str, Any]]:
    return await stream(sandbox, CALLBACKS)


async def test_unacknowledged_notifications_follow_alipays_retry_schedule(
    sandbox: AlipaySandbox, receiver: Receiver
) -> None:
    trade = trade_client(sandbox)
    trade_no = await create(trade, receiver)
    receiver.replies.extend(["fail"] * 20)
    await pay(sandbox, tradeNo=trade_no)
    assert len(receiver.bodies) == 1
    for number, interval in enumerate(NOTIFY_RETRY_SCHEDULE, start=2):
        await sandbox.advance(interval - 1)
        assert len(receiver.bodies) == number - 1, f"attempt {number} is not due yet"
        await sandbox.advance(1)
        assert len(receiver.bodies) == number, f"attempt {number} after {interval:.0f} s"
    await sandbox.advance(2 * 86400)
    assert len(receiver.bodies) == 8, "1 + 7 retries over about 25 hours, then Alipay gives up"
    outcomes = [entry["outcome"] for entry in await attempts(sandbox)]
    assert outcomes == ["retrying"] * 7 + ["gave-up"]
    assert NOTIFY_RETRY_SCHEDULE == (240.0, 600.0, 600.0, 3600.0, 7200.0, 21600.0, 54000.0)
    assert len(set(receiver.bodies)) == 1, "every retry is the same signed notification"


@pytest.mark.parametrize("almost", ["SUCCESS", "success\n", " success", "ok", ""])
async def test_only_exactly_success_acknowledges(sandbox: AlipaySandbox, receiver: Receiver, almost: str) -> None:
    trade = trade_client(sandbox)
    trade_no = await create(trade, receiver)
    receiver.replies.append(almost)
    await pay(sandbox, tradeNo=trade_no)
    await sandbox.advance(240)
    assert len(receiver.bodies) == 2
    assert [entry["outcome"] for entry in await attempts(sandbox)] == ["retrying", "delivered"]
    await sandbox.advance(86400)
    assert len(receiver.bodies) == 2, "acknowledged: no more retries"


async def test_notification_faults(sandbox: AlipaySandbox, receiver: Receiver) -> None:
    trade = trade_client(sandbox)
    for number in range(1, 5):
        await create(trade, receiver, out_trade_no=f"B{number}", total_fen=100 * number, time_expire=None)

    await sandbox.set_faults({"callbacks": {"duplicateRate": 1.0}})
    await pay(sandbox, outTradeNo="B1")
    assert len(receiver.bodies) == 2
    assert receiver.bodies[0] == receiver.bodies[1], "the same notification (same notify_id) twice"

    await sandbox.set_faults({"callbacks": {"dropRate": 1.0}})
    await pay(sandbox, outTradeNo="B2")
    await sandbox.advance(86400)
    assert len(receiver.bodies) == 2, "dropped: never delivered"
    assert (await attempts(sandbox))[-1]["outcome"] == "dropped"

    await sandbox.set_faults({"callbacks": {"delaySeconds": 120, "reorder": True}})
    await pay(sandbox, outTradeNo="B3")
    await pay(sandbox, outTradeNo="B4")
    assert len(receiver.bodies) == 2, "delayed"
    await sandbox.advance(120)
    late = {trade.parse_notification(params).out_trade_no for params in receiver.received[2:]}
    assert late == {"B3", "B4"}
    (await sandbox.admin.delete("/sandbox/admin/alipay/faults")).raise_for_status()


async def test_a_forged_notification_is_refused(sandbox: AlipaySandbox, receiver: Receiver) -> None:
    trade = trade_client(sandbox)
    trade_no = await create(trade, receiver)
    await pay(sandbox, tradeNo=trade_no)
    params = receiver.received[0]
    with pytest.raises(AlipayNotificationError):
        trade.parse_notification({**params, "total_amount": "0.01"})
    forged = {**params, "sign": sandbox.simulator.sign("app_id=x")}
    with pytest.raises(AlipayNotificationError):
        trade.parse_notification(forged)


# -- bills ---------------------------------------------------------------------------------------------------------


async def test_the_daily_bill(sandbox: AlipaySandbox, receiver: Receiver) -> None:
    trade = trade_client(sandbox)
    for out_trade_no, fen in (("B1", 2500), ("B2", 1000)):
        trade_no = await create(trade, receiver, out_trade_no=out_trade_no, total_fen=fen)
        await pay(sandbox, tradeNo=trade_no)
    await create(trade, receiver, out_trade_no="B3", total_fen=300)  # never paid: not in the bill
    await trade.refund("B1", 500, "R1", "部分退款")
    bill_day = date(2025, 3, 1)  # START is 16:00 Beijing time on 1 March

    with pytest.raises(AlipayBillNotFoundError) as not_yet:
        await trade.bill_download_url(bill_day)
    assert not_yet.value.sub_code == "isp.bill_not_exist"

    await sandbox.advance(86400)  # next day: yesterday's bill exists; today's payment is not in it
    trade_no = await create(trade, receiver, out_trade_no="B4", total_fen=700, time_expire=None)
    await pay(sandbox, tradeNo=trade_no)

    url = await trade.bill_download_url(bill_day)
    assert "/sandbox/alipay/downloadBillFile.resource?" in url
    assert "bizDates=20250301" in url
    data = await trade.download_bill(url)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        assert names == [
            f"{DEFAULT_SELLER_ID}_20250301_业务明细.csv",
            f"{DEFAULT_SELLER_ID}_20250301_业务明细(汇总).csv",
        ]
        raw = archive.read(names[0])
    text = raw.decode("gbk")
    assert text.startswith("#支付宝业务明细查询\r\n")
    assert "#交易合计：2笔，退款合计：1笔" in text
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")

    entries = parse_trade_bill(data)
    rows = [(e.out_trade_no, e.kind, e.total_fen, e.received_fen, e.out_request_no) for e in entries]
    assert rows == [
        ("B1", "交易", 2500, 2500, None),
        ("B2", "交易", 1000, 1000, None),
        ("B1", "退款", 2500, -500, "R1"),
    ]
    assert entries[0].finished_at == START
    assert entries[0].subject == SUBJECT

    await sandbox.advance(31)
    with pytest.raises(AlipayUnavailableError):
        await trade.download_bill(url)
    fresh = await trade.download_bill(await trade.bill_download_url(bill_day))
    assert [e.out_trade_no for e in parse_trade_bill(fresh)] == ["B1", "B2", "B1"]


# -- the answers are signed ----------------------------------------------------------------------------------------


def _forge_paid(body: str) -> str:
    content, _sign = extract_response_content(body, "alipay.trade.query")
    forged = content.replace('"WAIT_BUYER_PAY"', '"TRADE_SUCCESS"')
    assert forged != content
    return body.replace(content, forged)


def _forge_refund(body: str) -> str:
    content, _ = extract_response_content(body, "alipay.trade.refund")
    payload = json.loads(content)
    return body.replace(f'"refund_fee":"{payload["refund_fee"]}"', '"refund_fee":"0.01"')


async def test_a_tampered_answer_is_rejected(
    sandbox: AlipaySandbox, receiver: Receiver, tampering_proxy: TamperingProxy
) -> None:
    direct = trade_client(sandbox)
    trade_no = await create(direct, receiver)
    proxied = trade_client(sandbox, gateway_url=f"{tampering_proxy.url}/gateway.do")
    tampering_proxy.tamper = str
    assert (await proxied.query("B1")).trade_no == trade_no, "the proxy alone changes nothing"
    tampering_proxy.tamper = _forge_paid
    try:
        with pytest.raises(AlipayBadSignatureError) as caught:
            await proxied.query("B1")
        assert caught.value.message == UNAVAILABLE_MESSAGE
        await pay(sandbox, tradeNo=trade_no)
        tampering_proxy.tamper = _forge_refund
        with pytest.raises(AlipayBadSignatureError):
            await proxied.refund("B1", 100, "R1", "退款")
    finally:
        tampering_proxy.tamper = str


# -- app payments --------------------------------------------------------------------------------------------------


async def test_the_app_order_string(sandbox: AlipaySandbox, receiver: Receiver) -> None:
    trade = trade_client(sandbox)
    order = trade.app_pay_order_string("A1", 1990, "复诊挂号", time_expire=EXPIRE, notify_url=receiver.notify_url)
    params = dict(parse_qsl(order, keep_blank_values=True, strict_parsing=True))
    assert rsa2_verify(sign_content(params), params["sign"], public_pem("app")), "verifies with the app public key"
    assert json.loads(params["biz_content"]) == {
        "out_trade_no": "A1",
        "total_amount": "19.90",
        "subject": "复诊挂号",
        "product_code": "QUICK_MSECURITY_PAY",
        "time_expire": "2025-03-01 16:15:00",
    }
    assert sandbox.simulator.trade(APP_ID, out_trade_no="A1") is None, "no HTTP call: nothing exists yet"

    tampered = order.replace("19.90", "0.01")
    assert tampered != order
    refused = await sandbox.admin.post("/sandbox/alipay/test/trade/app-pay", json={"orderString": tampered})
    assert refused.status_code == 400
    assert refused.json()["extra"]["sub_code"] == "isv.invalid-signature"

    paid = await sandbox.admin.post("/sandbox/alipay/test/trade/app-pay", json={"orderString": order, "userId": BUYER})
    assert paid.status_code == 200, paid.text
    assert paid.json()["resultStatus"] == "9000"
    await sandbox.advance(0)
    notification = trade.parse_notification(receiver.received[0])
    assert (notification.out_trade_no, notification.total_fen, notification.buyer_id) == ("A1", 1990, BUYER)
    found = await trade.query("A1")
    assert (found.status, found.total_fen, found.buyer_user_id) == ("TRADE_SUCCESS", 1990, BUYER)
    again = await sandbox.admin.post("/sandbox/alipay/test/trade/app-pay", json={"orderString": order})
    assert again.status_code == 409, "paid once"


async def test_the_trade_helpers_refuse_nonsense(sandbox: AlipaySandbox) -> None:
    both = await sandbox.admin.post("/sandbox/alipay/test/trade/pay", json={"tradeNo": "1", "outTradeNo": "B1"})
    assert both.status_code == 400
    unknown_field = await sandbox.admin.post("/sandbox/alipay/test/trade/pay", json={"trade": "1"})
    assert unknown_field.status_code == 400
    bad_fault = await sandbox.admin.put("/sandbox/alipay/test/trade/faults", json={"refundFailure": {"count": 0}})
    assert bad_fault.status_code == 400
    cleared = await sandbox.admin.delete("/sandbox/alipay/test/trade/faults")
    assert cleared.status_code == 204
    gone = await sandbox.http.get(f"{sandbox.url}/sandbox/alipay/downloadBillFile.resource", params={"fileId": "x"})
    assert gone.status_code == 404


async def test_seeding_forgets_trades(sandbox: AlipaySandbox, receiver: Receiver) -> None:
    trade = trade_client(sandbox)
    await create(trade, receiver)
    assert (await sandbox.admin.post("/sandbox/admin/alipay/seed", json={"seed": 0})).status_code == 200
    with pytest.raises(AlipayTradeNotFoundError):
        await trade.query("B1")
    assert datetime(2025, 3, 1, 8, 0, tzinfo=UTC) == START
