"""The agent's gRPC face: Alcor's GoalStateProvisioner service, served where ACA serves it."""

from __future__ import annotations

from concurrent import futures

import grpc

from emulator.alcor.agent import Agent
from emulator.alcor.schema import goalstateprovisioner_pb2_grpc as rpc
from emulator.model import ACA_PORT

#: A goal state with 100,000 neighbours is tens of megabytes; gRPC's default limit is 4 MB.
MAX_MESSAGE = 512 * 1024 * 1024
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]


class GoalStateService(rpc.GoalStateProvisionerServicer):
    def __init__(self, agent: Agent):
        self.agent = agent

    def PushNetworkResourceStates(self, request, context):  # noqa: N802 - the name is Alcor's
        return self.agent.push_v1(request)

    def PushGoalStatesStream(self, request_iterator, context):  # noqa: N802
        for goal_state in request_iterator:
            yield self.agent.push_v2(goal_state)

    def RequestGoalStates(self, request, context):  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "an agent asks this of the controller, not of another agent")


def serve(agent: Agent, *listen: str, workers: int = 8) -> grpc.Server:
    """Serves on every address given (host:port, unix:/path); 0.0.0.0:50001 when none is."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=CHANNEL_OPTIONS)
    rpc.add_GoalStateProvisionerServicer_to_server(GoalStateService(agent), server)
    for address in listen or (f"0.0.0.0:{ACA_PORT}",):
        if server.add_insecure_port(address) == 0:
            raise RuntimeError(f"cannot listen on {address}")
    server.start()
    return server
