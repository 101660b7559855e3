//! `emberdb.v1.Collections`: thin handlers over the engine.

use std::sync::Arc;

use emberdb_proto::v1 as pb;
use emberdb_proto::v1::collections_server::Collections;
use tonic::{Request, Response, Status};

use super::blocking::Blocking;
use super::convert;
use crate::auth::{self, Caller, Role};

pub struct CollectionsService {
    pub blocking: Arc<Blocking>,
}

#[tonic::async_trait]
impl Collections for CollectionsService {
    async fn create_version(
        &self,
        req: Request<pb::CreateVersionRequest>,
    ) -> Result<Response<pb::CreateVersionResponse>, Status> {
        let caller = Caller::of(&req)?;
        let r = req.into_inner();
        let (c, v) = (r.collection.clone(), r.version.clone());
        caller
            .audited("CreateVersion", &c, &v, Role::Admin, async move {
                let spec = convert::version_spec(&r)?;
                let info = self
                    .blocking
                    .run(move |e| e.create_version(&r.collection, &r.version, spec))
                    .await?;
                Ok(Response::new(pb::CreateVersionResponse {
                    version: Some(convert::version_info(info)),
                }))
            })
            .await
    }

    async fn list_collections(
        &self,
        req: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        let caller = Caller::of(&req)?;
        let cs = self.blocking.run(|e| e.list_collections()).await?;
        Ok(Response::new(pb::ListCollectionsResponse {
            collections: cs
                .into_iter()
                .filter(|c| caller.principal.can_see(&c.name))
                .map(convert::collection_info)
                .collect(),
        }))
    }

    async fn describe_version(
        &self,
        req: Request<pb::DescribeVersionRequest>,
    ) -> Result<Response<pb::DescribeVersionResponse>, Status> {
        auth::check_scoped(&req, Role::Reader)?;
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
        let caller = Caller::of(&req)?;
        let pb::DropVersionRequest {
            collection,
            version,
        } = req.into_inner();
        let (c, v) = (collection.clone(), version.clone());
        caller
            .audited("DropVersion", &c, &v, Role::Admin, async move {
                self.blocking
                    .run(move |e| e.drop_version(&collection, &version))
                    .await?;
                Ok(Response::new(pb::DropVersionResponse {}))
            })
            .await
    }

    async fn drop_collection(
        &self,
        req: Request<pb::DropCollectionRequest>,
    ) -> Result<Response<pb::DropCollectionResponse>, Status> {
        let caller = Caller::of(&req)?;
        let pb::DropCollectionRequest { collection } = req.into_inner();
        let c = collection.clone();
        caller
            .audited("DropCollection", &c, "", Role::Admin, async move {
                self.blocking
                    .run(move |e| e.drop_collection(&collection))
                    .await?;
                Ok(Response::new(pb::DropCollectionResponse {}))
            })
            .await
    }

    async fn set_alias(
        &self,
        req: Request<pb::SetAliasRequest>,
    ) -> Result<Response<pb::SetAliasResponse>, Status> {
        let caller = Caller::of(&req)?;
        let pb::SetAliasRequest {
            collection,
            alias,
            version,
        } = req.into_inner();
        let (c, v) = (collection.clone(), format!("{alias}->{version}"));
        caller
            .audited("SetAlias", &c, &v, Role::Admin, async move {
                let prev = self
                    .blocking
                    .run(move |e| e.set_alias(&collection, &alias, &version))
                    .await?;
                Ok(Response::new(pb::SetAliasResponse {
                    previous_version: prev.unwrap_or_default(),
                }))
            })
            .await
    }

    async fn delete_alias(
        &self,
        req: Request<pb::DeleteAliasRequest>,
    ) -> Result<Response<pb::DeleteAliasResponse>, Status> {
        let caller = Caller::of(&req)?;
        let pb::DeleteAliasRequest { collection, alias } = req.into_inner();
        let (c, a) = (collection.clone(), alias.clone());
        caller
            .audited("DeleteAlias", &c, &a, Role::Admin, async move {
                self.blocking
                    .run(move |e| e.delete_alias(&collection, &alias))
                    .await?;
                Ok(Response::new(pb::DeleteAliasResponse {}))
            })
            .await
    }
}
