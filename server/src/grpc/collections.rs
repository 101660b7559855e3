//! `emberdb.v1.Collections`: thin handlers over the engine.

use std::sync::Arc;

use emberdb_proto::v1 as pb;
use emberdb_proto::v1::collections_server::Collections;
use tonic::{Request, Response, Status};

use super::blocking::Blocking;
use super::convert;

pub struct CollectionsService {
    pub blocking: Arc<Blocking>,
}

#[tonic::async_trait]
impl Collections for CollectionsService {
    async fn create_version(
        &self,
        req: Request<pb::CreateVersionRequest>,
    ) -> Result<Response<pb::CreateVersionResponse>, Status> {
        let r = req.into_inner();
        let spec = convert::version_spec(&r)?;
        let info = self
            .blocking
            .run(move |e| e.create_version(&r.collection, &r.version, spec))
            .await?;
        Ok(Response::new(pb::CreateVersionResponse {
            version: Some(convert::version_info(info)),
        }))
    }

    async fn list_collections(
        &self,
        _req: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        let cs = self.blocking.run(|e| e.list_collections()).await?;
        Ok(Response::new(pb::ListCollectionsResponse {
            collections: cs.into_iter().map(convert::collection_info).collect(),
        }))
    }

    async fn describe_version(
        &self,
        req: Request<pb::DescribeVersionRequest>,
    ) -> Result<Response<pb::DescribeVersionResponse>, Status> {
        let pb::DescribeVersionRequest {
            collection,
            version,
        } = req.into_inner();
        let info = self
            .blocking
            .run(move |e| e.describe_version(&collection, &version))
            .await?;
        Ok(Response::new(pb::DescribeVersionResponse {
            version: Some(convert::version_info(info)),
        }))
    }

    async fn drop_version(
        &self,
        req: Request<pb::DropVersionRequest>,
    ) -> Result<Response<pb::DropVersionResponse>, Status> {
        let pb::DropVersionRequest {
            collection,
            version,
        } = req.into_inner();
        self.blocking
            .run(move |e| e.drop_version(&collection, &version))
            .await?;
        Ok(Response::new(pb::DropVersionResponse {}))
    }

    async fn drop_collection(
        &self,
        req: Request<pb::DropCollectionRequest>,
    ) -> Result<Response<pb::DropCollectionResponse>, Status> {
        let pb::DropCollectionRequest { collection } = req.into_inner();
        self.blocking
            .run(move |e| e.drop_collection(&collection))
            .await?;
        Ok(Response::new(pb::DropCollectionResponse {}))
    }

    async fn set_alias(
        &self,
        req: Request<pb::SetAliasRequest>,
    ) -> Result<Response<pb::SetAliasResponse>, Status> {
        let pb::SetAliasRequest {
            collection,
            alias,
            version,
        } = req.into_inner();
        let prev = self
            .blocking
            .run(move |e| e.set_alias(&collection, &alias, &version))
            .await?;
        Ok(Response::new(pb::SetAliasResponse {
            previous_version: prev.unwrap_or_default(),
        }))
    }

    async fn delete_alias(
        &self,
        req: Request<pb::DeleteAliasRequest>,
    ) -> Result<Response<pb::DeleteAliasResponse>, Status> {
        let pb::DeleteAliasRequest { collection, alias } = req.into_inner();
        self.blocking
            .run(move |e| e.delete_alias(&collection, &alias))
            .await?;
        Ok(Response::new(pb::DeleteAliasResponse {}))
    }
}
