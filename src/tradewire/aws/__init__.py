"""The original brief's serverless design on AWS, built on the same core as the tradewire server.

EAs connect to an API Gateway WebSocket API (`$connect`, `$default`, `$disconnect` run the Lambda
handlers in `handlers.py`); durable events go to the DynamoDB store (store/dynamodb.py), latest-wins
state to a DynamoDB live table (`state.py`), everything is published to AppSync Events over HTTP
(`publisher.py`), replies go back through the `@connections` management API (`connections.py`).
The SAM template and the deployment guide are in deploy/aws/.
"""
