"""A real Flower simulation (Ray, loopback), run by test_flower.py in a process of its own.

5 supernodes fit least squares from a common start, 10 local gradient steps per round, 3
rounds; in the attacked runs supernode 4 sends -100 times its model, in the malformed run a model
with one coordinate too many. One ServerApp runs FedAvg without the attack, FedAvg with it,
RobustFedAvg(cwtm(f=1)) with it and with the malformed replies, and prints each run's distance
to the true solution as one JSON line.
"""
import faulthandler
import json

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

import byzkern as bk
from byzkern.integrations.flower import RobustFedAvg

DIM, NODES, ROUNDS, LOCAL_STEPS, SAMPLES = 20, 5, 3, 10, 50
W_TRUE = np.random.default_rng(0).standard_normal(DIM)

client_app = ClientApp()


@client_app.train()
def local_training(msg, context):
    node = int(context.node_config["partition-id"])
    rng = np.random.default_rng(node)
    A = rng.standard_normal((SAMPLES, DIM))
    y = A @ W_TRUE + 0.1 * rng.standard_normal(SAMPLES)
    w = msg.content["arrays"]["w"].numpy()
    for _ in range(LOCAL_STEPS):
        w = w - 0.1 * A.T @ (A @ w - y) / SAMPLES
    attack = msg.content["config"]["attack"]
    if node == NODES - 1 and attack == "scale":
        w = -100.0 * w
    if node == NODES - 1 and attack == "malformed":
        w = np.append(w, 0.0)
    content = RecordDict({"arrays": ArrayRecord({"w": Array(w)}),
                          "metrics": MetricRecord({"num-examples": SAMPLES})})
    return Message(content, reply_to=msg)


def main():
    # Every node must have joined before round 1, so that each round has all 5 replies.
    options = dict(fraction_evaluate=0.0, min_available_nodes=NODES, min_train_nodes=NODES)
    runs = {"honest FedAvg": (FedAvg(**options), "none"),
            "attacked FedAvg": (FedAvg(**options), "scale"),
            "attacked RobustFedAvg": (RobustFedAvg(bk.cwtm(f=1), **options), "scale"),
            "malformed RobustFedAvg": (RobustFedAvg(bk.cwtm(f=1), **options), "malformed")}
    errors = {}
    server_app = ServerApp()

    @server_app.main()
    def serve(grid, context):
        for name, (strategy, attack) in runs.items():
            result = strategy.start(grid=grid, initial_arrays=ArrayRecord({"w": Array(np.zeros(DIM))}),
                                    num_rounds=ROUNDS, train_config=ConfigRecord({"attack": attack}))
            errors[name] = float(np.linalg.norm(result.arrays["w"].numpy() - W_TRUE))

    run_simulation(server_app, client_app, num_supernodes=NODES,
                   backend_config={"init_args": {"num_cpus": 2}, "client_resources": {"num_cpus": 1}})
    print(json.dumps(errors))


if __name__ == "__main__":
    faulthandler.enable()  # a crash prints every thread's stack to stderr, which the test shows
    main()
