from __future__ import annotations

from dataclasses import asdict

import grpc
from pushreach.v1 import sms_pb2, sms_pb2_grpc

from ..model import (
    App,
    SmsCounts,
    SmsRecordFilter,
    SmsStatus,
    Statistics,
    StatisticsInterval,
)
from ..services.reporting import ReportingService
from ..services.validation import Violations
from . import convert
from .auth import Authenticator
from .rpc import app_rpc


class SmsServicer(sms_pb2_grpc.SmsServiceServicer):
    def __init__(self, auth: Authenticator, reporting: ReportingService) -> None:
        self.auth = auth
        self._reporting = reporting

    @app_rpc
    async def ListSmsRecords(
        self, request: sms_pb2.ListSmsRecordsRequest, app: App, context: grpc.aio.ServicerContext
    ):
        v = Violations()
        statuses = []
        for i, s in enumerate(request.statuses):
            try:
                statuses.append(SmsStatus(s))
            except ValueError:
                v.add(f"statuses[{i}]", f"unknown value {s}")
        start = convert.checked_seconds(v, "start_time", request.start_time) if request.HasField("start_time") else None
        end = convert.checked_seconds(v, "end_time", request.end_time) if request.HasField("end_time") else None
        v.raise_if_any()
        flt = SmsRecordFilter(
            push_id=request.push_id,
            phone_number=request.phone_number,
            statuses=tuple(sorted(set(statuses))),
            start_time=start,
            end_time=end,
        )
        records, next_token = await self._reporting.list_sms_records(
            app, flt, request.page_size, request.page_token
        )
        return sms_pb2.ListSmsRecordsResponse(
            records=[convert.sms_record(r, request.show_full_phone_number) for r in records],
            next_page_token=next_token,
        )

    @app_rpc
    async def GetStatistics(self, request: sms_pb2.GetStatisticsRequest, app: App, context: grpc.aio.ServicerContext):
        v = Violations()
        start = convert.checked_seconds(v, "start_time", request.start_time) if request.HasField("start_time") else None
        end = convert.checked_seconds(v, "end_time", request.end_time) if request.HasField("end_time") else None
        interval = None
        if request.interval:
            try:
                interval = StatisticsInterval(request.interval)
            except ValueError:
                v.add("interval", f"unknown value {request.interval}")
        v.raise_if_any()
        buckets: list[Statistics] = []
        if interval is None:
            s = await self._reporting.statistics(app, start, end)
        else:
            s, buckets = await self._reporting.statistics_series(app, start, end, interval, request.time_zone)
        return sms_pb2.GetStatisticsResponse(
            start_time=convert.ts(s.start_time),
            end_time=convert.ts(s.end_time),
            push_count=s.push_count,
            target_count=s.target_count,
            arrived_count=s.arrived_count,
            clicked_count=s.clicked_count,
            arrival_rate=s.arrived_count / s.target_count if s.target_count else 0.0,
            click_rate=s.clicked_count / s.target_count if s.target_count else 0.0,
            sms=_sms_counts(s),
            sms_fee=s.sms_fee,
            pending_fallback_count=s.pending_fallback_count,
            buckets=[
                sms_pb2.StatisticsBucket(
                    start_time=convert.ts(b.start_time),
                    end_time=convert.ts(b.end_time),
                    push_count=b.push_count,
                    target_count=b.target_count,
                    arrived_count=b.arrived_count,
                    clicked_count=b.clicked_count,
                    sms=_sms_counts(b),
                    sms_fee=b.sms_fee,
                )
                for b in buckets
            ],
        )


def _sms_counts(s: Statistics) -> sms_pb2.SmsOutcomeCounts:
    return sms_pb2.SmsOutcomeCounts(**asdict(SmsCounts.of(s.sms_by_status)))
