# Sets up a moto server that checks signatures (started with INITIAL_NO_AUTH_ACTION_COUNT):
# creates the bucket, an IAM user allowed everything and its access key, then spends the
# unauthenticated actions left until moto refuses a wrong key. Prints "KEY_ID SECRET".
import sys, json, boto3, botocore
ep, bucket = sys.argv[1], sys.argv[2]
setup = dict(endpoint_url=ep, region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="setup")
s3 = boto3.client("s3", **setup)
iam = boto3.client("iam", **setup)
s3.create_bucket(Bucket=bucket)
iam.create_user(UserName="syncline")
iam.put_user_policy(UserName="syncline", PolicyName="all", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="syncline")["AccessKey"]
bad = boto3.client("s3", endpoint_url=ep, region_name="us-east-1",
                   aws_access_key_id="AKIAWRONGWRONGWRONG1", aws_secret_access_key="wrong")
for _ in range(50):
    try:
        bad.list_objects_v2(Bucket=bucket)
    except botocore.exceptions.ClientError:
        break
else:
    sys.exit("moto never enforced authentication")
good = boto3.client("s3", endpoint_url=ep, region_name="us-east-1",
                    aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
good.put_object(Bucket=bucket, Key="probe", Body=b"ok")
print(key["AccessKeyId"], key["SecretAccessKey"])
