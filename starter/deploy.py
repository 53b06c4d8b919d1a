"""Worker Deployment Versioning for operators: which versions run, promote, ramp, and who has drained.

    python -m starter.deploy list                  # versions, their open cases, who may stop
    python -m starter.deploy promote BUILD_ID      # BUILD_ID becomes current: every new case starts there
    python -m starter.deploy ramp BUILD_ID 50      # 50 % of new cases start on BUILD_ID, the rest on current
    python -m starter.deploy ramp --stop           # no ramping version any more
    python -m starter.deploy drained [BUILD_ID] [--wait]   # exit 0 when BUILD_ID's workers may stop

A version has drained when it is neither current nor ramping and no pinned workflow is open on it
any more: both the server's drainage status (which waits a grace period for visibility to catch up)
and a visibility count of the open pinned workflows say so. Its workers may then stop.
The deployment is WORKER_DEPLOYMENT (default "aftersales"), on TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass

from temporalio.api.enums.v1 import VersionDrainageStatus, WorkerDeploymentVersionStatus
from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    DescribeWorkerDeploymentVersionRequest,
    SetWorkerDeploymentCurrentVersionRequest,
    SetWorkerDeploymentRampingVersionRequest,
)
from temporalio.api.deployment.v1 import WorkerDeploymentVersion as VersionProto
from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode

from config import DEFAULT_DEPLOYMENT, settings

IDENTITY = "starter.deploy"


@dataclass(frozen=True)
class VersionReport:
    build_id: str
    status: str  # current, ramping, draining, drained, inactive (never current), created (no poller yet)
    drainage: str  # the server's drainage status: draining, drained, or "-" (current, ramping, never used)
    open_cases: int  # running CaseWorkflow executions on this version
    open_pinned: int  # running pinned workflows of any type on this version (what keeps its workers needed)

    @property
    def may_stop(self) -> bool:
        """No open pinned workflow, not routed to, and (if it ever served) the server agrees it drained."""
        if self.status in ("current", "ramping") or self.open_pinned:
            return False
        return self.drainage == "drained" or self.status in ("inactive", "created")


@dataclass(frozen=True)
class DeploymentReport:
    name: str
    current: str | None  # build id; None = unversioned workers
    ramping: str | None
    ramp_percent: float
    versions: list[VersionReport]

    def version(self, build_id: str) -> VersionReport | None:
        return next((v for v in self.versions if v.build_id == build_id), None)


def _name(enum, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()


def visibility_version(deployment: str, build_id: str) -> str:
    """The value of the TemporalWorkerDeploymentVersion search attribute ("deployment:build")."""
    return f"{deployment}:{build_id}"


async def _count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def describe(client: Client, namespace: str, deployment: str) -> DeploymentReport | None:
    """The deployment's versions with their open cases, or None when no worker of it ever polled."""
    try:
        resp = await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(namespace=namespace, deployment_name=deployment))
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    info = resp.worker_deployment_info
    routing = info.routing_config
    versions = []
    for summary in sorted(info.version_summaries, key=lambda v: v.create_time.ToDatetime()):
        build = summary.deployment_version.build_id
        on_version = f"ExecutionStatus='Running' AND TemporalWorkerDeploymentVersion='{visibility_version(deployment, build)}'"
        cases, pinned = await asyncio.gather(
            _count(client, f"{on_version} AND WorkflowType='CaseWorkflow'"),
            _count(client, f"{on_version} AND TemporalWorkflowVersioningBehavior='Pinned'"))
        drainage = summary.drainage_info.status or summary.drainage_status
        versions.append(VersionReport(
            build_id=build,
            status=_name(WorkerDeploymentVersionStatus, summary.status, "WORKER_DEPLOYMENT_VERSION_STATUS_"),
            drainage=_name(VersionDrainageStatus, drainage, "VERSION_DRAINAGE_STATUS_") if drainage else "-",
            open_cases=cases, open_pinned=pinned))
    return DeploymentReport(
        name=deployment,
        current=routing.current_deployment_version.build_id or None,
        ramping=routing.ramping_deployment_version.build_id or None,
        ramp_percent=routing.ramping_version_percentage,
        versions=versions)


async def wait_registered(client: Client, namespace: str, version: WorkerDeploymentVersion,
                          timeout: float = 30.0) -> None:
    """Until the server knows the version (its first worker polled). Raises TimeoutError."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await client.workflow_service.describe_worker_deployment_version(DescribeWorkerDeploymentVersionRequest(
                namespace=namespace, deployment_version=VersionProto(
                    deployment_name=version.deployment_name, build_id=version.build_id)))
            return
        except RPCError as e:
            if e.status != RPCStatusCode.NOT_FOUND:
                raise
        if loop.time() > deadline:
            raise TimeoutError(f"no worker of {version.deployment_name}:{version.build_id} polled within {timeout:.0f} s")
        await asyncio.sleep(0.2)


async def promote(client: Client, namespace: str, deployment: str, build_id: str) -> None:
    """build_id becomes the current version (the server refuses a version none of whose workers polls)."""
    await client.workflow_service.set_worker_deployment_current_version(SetWorkerDeploymentCurrentVersionRequest(
        namespace=namespace, deployment_name=deployment, build_id=build_id, identity=IDENTITY))


async def ramp(client: Client, namespace: str, deployment: str, build_id: str | None, percent: float) -> None:
    """percent % of new workflows start on build_id, the others on the current version; None stops ramping."""
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be between 0 and 100, not {percent}")
    await client.workflow_service.set_worker_deployment_ramping_version(SetWorkerDeploymentRampingVersionRequest(
        namespace=namespace, deployment_name=deployment, build_id=build_id or "",
        percentage=percent if build_id else 0, identity=IDENTITY))


async def promote_if_no_current(client: Client, namespace: str, version: WorkerDeploymentVersion,
                                timeout: float = 60.0) -> bool:
    """Makes `version` current when its deployment has no current version yet (its first start)."""
    await wait_registered(client, namespace, version, timeout)
    report = await describe(client, namespace, version.deployment_name)
    if report is not None and report.current is not None:
        return False
    await promote(client, namespace, version.deployment_name, version.build_id)
    return True


# ----------------------------------------------------------------------------- the CLI
def render(report: DeploymentReport) -> str:
    ramp = f", ramping {report.ramping} at {report.ramp_percent:g} %" if report.ramping else ""
    lines = [f"deployment {report.name}: current {report.current or '(unversioned workers)'}{ramp}",
             f"{'BUILD':<16}{'STATUS':<10}{'DRAINAGE':<10}{'OPEN CASES':>11}{'OPEN PINNED':>13}  WORKERS MAY STOP"]
    for v in report.versions:
        lines.append(f"{v.build_id:<16}{v.status:<10}{v.drainage:<10}{v.open_cases:>11}{v.open_pinned:>13}  "
                     f"{'yes' if v.may_stop else 'no'}")
    return "\n".join(lines)


def drained_message(report: DeploymentReport, build_id: str) -> tuple[bool, str]:
    v = report.version(build_id)
    if v is None:
        return False, f"{build_id}: no such version in deployment {report.name}"
    if v.may_stop:
        return True, f"{build_id}: drained (no open pinned workflow); its workers may stop"
    if v.status in ("current", "ramping"):
        return False, f"{build_id}: {v.status}: new cases still start there"
    if v.open_pinned:
        return False, f"{build_id}: {v.open_pinned} open pinned workflow(s) ({v.open_cases} case(s)) still run there"
    return False, f"{build_id}: no open pinned workflow; waiting for the server to confirm (drainage {v.drainage})"


async def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m starter.deploy", description=__doc__.split("\n")[0])
    p.add_argument("--deployment", default=os.environ.get("WORKER_DEPLOYMENT") or DEFAULT_DEPLOYMENT)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the versions, their open cases and whether their workers may stop")
    promote_p = sub.add_parser("promote", help="make BUILD_ID the current version")
    promote_p.add_argument("build_id")
    ramp_p = sub.add_parser("ramp", help="start PERCENT %% of new cases on BUILD_ID")
    ramp_p.add_argument("build_id", nargs="?")
    ramp_p.add_argument("percent", nargs="?", type=float)
    ramp_p.add_argument("--stop", action="store_true", help="remove the ramping version")
    drained_p = sub.add_parser("drained", help="exit 0 when BUILD_ID has drained (all versions listed without it)")
    drained_p.add_argument("build_id", nargs="?")
    drained_p.add_argument("--wait", action="store_true", help="poll until BUILD_ID has drained")
    drained_p.add_argument("--interval", type=float, default=10.0, help="seconds between checks with --wait")
    args = p.parse_args(argv)
    if args.command == "ramp" and not args.stop and (args.build_id is None or args.percent is None):
        p.error("ramp needs BUILD_ID and PERCENT (or --stop)")
    if args.command == "drained" and args.wait and not args.build_id:
        p.error("drained --wait needs BUILD_ID")

    s = settings()
    client = await Client.connect(s.temporal_address, namespace=s.temporal_namespace)
    ns, name = s.temporal_namespace, args.deployment
    try:
        if args.command == "promote":
            await promote(client, ns, name, args.build_id)
            print(f"{args.build_id} is the current version of {name}: new cases start there")
        elif args.command == "ramp":
            await ramp(client, ns, name, None if args.stop else args.build_id, 0 if args.stop else args.percent)
            print(f"no ramping version in {name}" if args.stop else
                  f"{args.percent:g} % of new cases of {name} start on {args.build_id}")
        report = await describe(client, ns, name)
        if report is None:
            print(f"deployment {name}: no worker of it has polled yet", file=sys.stderr)
            return 1
        if args.command != "drained":
            print(render(report))
            return 0
        if not args.build_id:
            done = [v.build_id for v in report.versions if v.may_stop]
            print("drained (workers may stop): " + (", ".join(done) if done else "none"))
            return 0
        while True:
            ok, message = drained_message(report, args.build_id)
            print(message, flush=True)
            if ok or not args.wait:
                return 0 if ok else 1
            await asyncio.sleep(args.interval)
            report = await describe(client, ns, name)
    except (RPCError, ValueError) as e:  # e.g. promoting a version none of whose workers polls
        print(f"refused: {e}", file=sys.stderr)
        return 2


def main() -> None:
    code = asyncio.run(cli())
    # A short-lived client process can abort in interpreter teardown while the SDK's Rust threads
    # still run ("PyGILState_Release", temporalio/sdk-python#300, seen here): skip the teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
