"""Deploys template.yaml to a LocalStack-compatible emulator (ministack) as
`sam package && sam deploy` would: uploads the cargo-lambda zips to S3,
points each function's CodeUri at its zip, and creates the CloudFormation
stack (the emulator applies the SAM transform). Prints the stack's outputs
as JSON.

    python deploy/ministack.py --endpoint URL --stack NAME --exchange-url URL \
        --jwt-issuer URL --jwt-audience AUD [--artifacts target/lambda]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import boto3
from cfnlint.decode import cfn_yaml

FUNCTIONS = {"PlaceOrderFunction": "place-order", "SettleFunction": "settle", "ReconcilerFunction": "reconciler"}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--stack", required=True)
    parser.add_argument("--exchange-url", required=True)
    parser.add_argument("--jwt-issuer", required=True)
    parser.add_argument("--jwt-audience", required=True)
    parser.add_argument("--architecture", default="x86_64")
    parser.add_argument("--artifacts", default="target/lambda")
    parser.add_argument("--template", default="template.yaml")
    args = parser.parse_args()

    session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    s3 = session.client("s3", endpoint_url=args.endpoint)
    cloudformation = session.client("cloudformation", endpoint_url=args.endpoint)

    bucket = f"{args.stack}-artifacts"
    s3.create_bucket(Bucket=bucket)
    template = cfn_yaml.load(args.template)
    for resource, binary in FUNCTIONS.items():
        artifact = Path(args.artifacts) / binary / "bootstrap.zip"
        if not artifact.is_file():
            print(f"{artifact} is missing: run cargo lambda build [--release] --output-format zip", file=sys.stderr)
            return 1
        key = f"{binary}.zip"
        s3.upload_file(str(artifact), bucket, key)
        properties = template["Resources"][resource]["Properties"]
        properties["CodeUri"] = {"Bucket": bucket, "Key": key}
        template["Resources"][resource].pop("Metadata", None)

    parameters = {
        "ExchangeUrl": args.exchange_url,
        "JwtIssuer": args.jwt_issuer,
        "JwtAudience": args.jwt_audience,
        "Architecture": args.architecture,
    }
    cloudformation.create_stack(
        StackName=args.stack,
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    deadline = time.time() + 300
    while True:
        stack = cloudformation.describe_stacks(StackName=args.stack)["Stacks"][0]
        status = stack["StackStatus"]
        if status == "CREATE_COMPLETE":
            break
        if status.endswith("FAILED") or status.startswith("ROLLBACK") or time.time() > deadline:
            events = cloudformation.describe_stack_events(StackName=args.stack)["StackEvents"]
            for event in events[:20]:
                print(event.get("LogicalResourceId"), event.get("ResourceStatus"), event.get("ResourceStatusReason"), file=sys.stderr)
            print(f"stack {args.stack}: {status}", file=sys.stderr)
            return 1
        time.sleep(1)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    print(json.dumps(outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
